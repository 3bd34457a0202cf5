//! The OpenAPI document: generated from the handlers and their types, then completed with the
//! error answers every operation can give, so the document says what the API really does.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::{fabric, inventory, ipam, nodes, policies, policy, system, topology};

/// The OpenAPI document, generated from the handlers and their types.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tessera controller API", version = "1"),
    paths(
        topology::get_topology, topology::put_topology, topology::list_networks, topology::get_routes,
        inventory::list_hosts, inventory::create_host, inventory::get_host, inventory::update_host, inventory::delete_host,
        inventory::list_tenants, inventory::create_tenant, inventory::get_tenant, inventory::update_tenant, inventory::delete_tenant,
        inventory::list_segments, inventory::create_segment, inventory::get_segment, inventory::update_segment, inventory::delete_segment,
        ipam::list_blocks, ipam::list_endpoints, ipam::create_endpoint, ipam::get_endpoint, ipam::update_endpoint, ipam::delete_endpoint,
        system::list_tokens, system::create_token, system::delete_token, system::leader, system::controllers,
        policy::simulate_handler, policy::explain_handler,
        policies::list_policies, policies::get_policy, policies::put_policies, policies::delete_policy,
        nodes::list_nodes, nodes::node_state, nodes::ack, nodes::report,
        fabric::bgp, fabric::bgp_controller, fabric::cloud_routes, fabric::list_vips, fabric::create_vip, fabric::get_vip, fabric::delete_vip, fabric::drain_host, fabric::undrain_host,
    ),
    modifiers(&BearerAuth, &ErrorResponses),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The error answers of each operation, beside those its handler declares: 400 (a malformed
/// query, path or `If-Match`), 401 and 403 (token), 404 (a path naming an object), 409 (a
/// conflict or stale revision, for writes), 413, 415 and 422 (a body), 503 (the store is down).
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names_object = path.contains('{');
            let ops = [(&mut item.get, false), (&mut item.put, true), (&mut item.post, true), (&mut item.delete, true)];
            for (op, writes) in ops {
                if let Some(op) = op.as_mut() {
                    complete(op, names_object, writes);
                }
            }
        }
    }
}

fn complete(op: &mut Operation, names_object: bool, writes: bool) {
    let has_body = op.request_body.is_some();
    let mut codes = vec![
        ("400", "malformed request: query, path, header or body syntax"),
        ("401", "missing or unknown bearer token"),
        ("403", "the token's role does not allow this"),
        ("503", "the store is unavailable; retry later"),
    ];
    if names_object {
        codes.push(("404", "no such object (or not one this token may read)"));
    }
    if writes {
        codes.push(("409", "conflict with the stored state, or a stale If-Match revision"));
    }
    if has_body {
        codes.push(("413", "the body is over the size limit"));
        codes.push(("415", "the body's Content-Type is not one this operation takes"));
    }
    if has_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        codes.push(("422", "well-formed but invalid input; the error names the field"));
    }
    for (code, description) in codes {
        op.responses.responses.entry(code.to_string()).or_insert_with(|| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
        });
    }
}
