//! `tessera-cni` called exactly as a runtime calls it (environment, stdin, stdout), chained
//! with the reference plugins, against namespaces this test creates. Needs root.

use std::time::Duration;

use serde_json::json;
use tessera_tests::cni::Attachment;
use tessera_tests::netns::{finish, require_root, run};
use tessera_tests::vdc::Datacenter;

fn datacenter() -> Datacenter {
    let dc = Datacenter::new(1, 1);
    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    dc.wait_converged(Duration::from_secs(20));
    dc
}

fn pod_netns(dc: &mut Datacenter, name: &str) -> String {
    let ns = format!("{}-{name}", dc.prefix);
    run(&["ip", "netns", "add", &ns]);
    dc.own_namespace(&ns);
    ns
}

fn attachment(ns: &str, id: &str) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns: format!("/var/run/netns/{ns}"),
        ifname: "eth0".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=p".into(),
    }
}

#[test]
fn version_and_errors_follow_the_spec() {
    require_root();
    let dc = Datacenter::new(1, 1);
    let rt = dc.runtime(0);
    let plugin = json!({"type": "tessera-cni", "cniVersion": "1.1.0", "name": "n", "agentSocket": dc.hosts[0].socket()});

    let v = rt.exec("VERSION", None, &plugin);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.output["supportedVersions"], json!(["1.0.0", "1.1.0"]));

    let old = rt.exec("ADD", Some(&attachment("x", "c1")), &json!({"type": "tessera-cni", "cniVersion": "0.2.0", "name": "n"}));
    assert!(!old.ok);
    assert_eq!(old.output["code"], json!(1), "incompatible version: {:?}", old.output);

    let no_netns = rt.exec("ADD", Some(&Attachment { netns: String::new(), ..attachment("x", "c1") }), &plugin);
    assert!(!no_netns.ok);
    assert_eq!(no_netns.output["code"], json!(4), "{:?}", no_netns.output);
    assert!(no_netns.output["msg"].as_str().is_some_and(|m| m.contains("CNI_NETNS")));
    assert_eq!(no_netns.output["cniVersion"], json!("1.1.0"));

    let slash = rt.exec("ADD", Some(&attachment("x", "bad/id")), &plugin);
    assert_eq!(slash.output["code"], json!(4), "{:?}", slash.output);
    assert!(slash.output["msg"].as_str().is_some_and(|m| m.contains("CNI_CONTAINERID")));

    let bogus = rt.exec("FROB", Some(&attachment("x", "c1")), &plugin);
    assert_eq!(bogus.output["code"], json!(4));

    // An unreachable agent is "try again later"; the message names the socket.
    let lost =
        json!({"type": "tessera-cni", "cniVersion": "1.0.0", "name": "n", "agentSocket": "/nonexistent/agent.sock", "tenant": "shop"});
    let call = rt.exec("ADD", Some(&attachment("x", "c1")), &lost);
    assert_eq!(call.output["code"], json!(11), "{:?}", call.output);
    let status = rt.exec("STATUS", None, &lost);
    assert_eq!(status.output["code"], json!(50), "{:?}", status.output);
}

#[test]
fn chained_with_the_reference_plugins() {
    require_root();
    let mut dc = datacenter();
    let ns = pod_netns(&mut dc, "chained");
    let socket = dc.hosts[0].socket();
    let mut rt = dc.runtime(0);
    rt.runtime_config = json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "tessera",
        "plugins": [
            {"type": "tessera-cni", "agentSocket": socket, "enforceTimeoutMs": 15000},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false},
            {"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000},
        ],
    });
    let a = attachment(&ns, "chained-1");
    let (result, _) = rt.add(&list, &a).unwrap_or_else(|c| panic!("ADD failed: {} {}\n{}", c.output, c.stderr, dc.agent_log(0)));
    // prevResult went through every plugin: the last result still holds Tessera's address.
    let ip = result["ips"][0]["address"].as_str().expect("address").to_string();
    assert!(ip.starts_with("10.96.") && ip.ends_with("/32"), "{result}");
    assert_eq!(result["interfaces"][1]["sandbox"], json!(a.netns));
    // tuning ran inside the pod with our interface name.
    let sysctl = run(&["ip", "netns", "exec", &ns, "sysctl", "-n", "net.ipv4.conf.eth0.accept_local"]);
    assert_eq!(sysctl.trim(), "1");
    // portmap used the address from prevResult: the host port reaches the pod, without NAT of
    // the source (snat off), from the router side.
    dc.serve(&ns, &[80], &[7000], &[]);
    let host_ip = dc.hosts[0].ip.clone();
    let via_port = finish(dc.probe(&dc.router.clone(), &json!([{"id": "p", "proto": "tcp", "dst": host_ip, "port": 18080}]), 2.0));
    assert_eq!(via_port["p"], json!(true), "port mapping through prevResult failed");
    // The agent owns only its table: portmap's tables survive a resync.
    std::thread::sleep(Duration::from_secs_f64(dc.resync_seconds * 1.5));
    let tables = run(&["ip", "netns", "exec", &dc.hosts[0].ns, "nft", "list", "tables"]);
    assert!(tables.contains("inet tessera") && tables.lines().count() > 1, "{tables}");
    // CHECK through the chain, without portmap: portmap 1.1.1 fails CHECK for IPv4-only results
    // (containernetworking/plugins#819, fixed upstream after Debian 12's version).
    let mut checkable = list.clone();
    checkable["plugins"].as_array_mut().expect("plugins").retain(|p| p["type"] != "portmap");
    if let Err(c) = rt.check(&checkable, &a, &result) {
        panic!("CHECK after ADD failed: {} {}", c.output, c.stderr);
    }

    // DEL in reverse order, then again: both succeed; the veth and the address are gone.
    rt.del(&list, &a, Some(&result)).unwrap_or_else(|c| panic!("DEL failed: {} {}", c.output, c.stderr));
    rt.del(&list, &a, Some(&result)).unwrap_or_else(|c| panic!("second DEL failed: {} {}", c.output, c.stderr));
    let links = run(&["ip", "-n", &dc.hosts[0].ns, "-br", "link"]);
    assert!(!links.contains("tsr"), "host veth left behind: {links}");
    let (status, _) = dc.try_api("GET", "/v1/endpoints/cni/chained-1/eth0", None);
    assert_eq!(status, 404, "endpoint not released");
    // CHECK of something deleted fails.
    assert!(rt.check(&checkable, &a, &result).is_err());
}

#[test]
fn gc_releases_what_the_runtime_forgot_and_status_reports_readiness() {
    require_root();
    let mut dc = datacenter();
    let (ns1, ns2) = (pod_netns(&mut dc, "keep"), pod_netns(&mut dc, "gone"));
    let rt = dc.runtime(0);
    let list = dc.conflist(0);
    let plugin = {
        let mut p = list["plugins"][0].clone();
        p["cniVersion"] = json!("1.1.0");
        p["name"] = json!("tessera");
        p
    };
    assert!(rt.exec("STATUS", None, &plugin).ok, "agent with a state is ready");
    let keep = attachment(&ns1, "keep-1");
    let gone = attachment(&ns2, "gone-1");
    rt.add(&list, &keep).expect("ADD keep");
    rt.add(&list, &gone).expect("ADD gone");
    let mut gc = plugin.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep-1", "ifname": "eth0"}]);
    let call = rt.exec("GC", None, &gc);
    assert!(call.ok, "GC failed: {:?} {}", call.output, call.stderr);
    assert_eq!(dc.try_api("GET", "/v1/endpoints/cni/gone-1/eth0", None).0, 404);
    assert_eq!(dc.try_api("GET", "/v1/endpoints/cni/keep-1/eth0", None).0, 200);
    let links = run(&["ip", "-n", &dc.hosts[0].ns, "-br", "link"]);
    assert_eq!(links.matches("tsr").count(), 1, "{links}");
}

/// The pod's host side stays down until its rules are enforced: a pod whose rules cannot be
/// enforced in time is not started, and leaves nothing behind.
#[test]
fn add_fails_closed_when_rules_are_not_enforced_in_time() {
    require_root();
    let mut dc = datacenter();
    let ns = pod_netns(&mut dc, "late");
    let rt = dc.runtime(0);
    // The agent answers allocations but cannot apply anything: its nft is a failing stub.
    dc.restart_agent_with(0, &[("TESSERA_NFT", "/bin/false")]);
    let mut list = dc.conflist(0);
    list["plugins"][0]["enforceTimeoutMs"] = json!(1500);
    let a = attachment(&ns, "late-1");
    let err = rt.add(&list, &a).expect_err("ADD must fail");
    assert_eq!(err.output["code"], json!(101), "{:?}", err.output);
    assert!(err.output["msg"].as_str().is_some_and(|m| m.contains("not enforced within 1500 ms")), "{:?}", err.output);
    assert_eq!(dc.try_api("GET", "/v1/endpoints/cni/late-1/eth0", None).0, 404, "address not released");
    let links = run(&["ip", "-n", &dc.hosts[0].ns, "-br", "link"]);
    assert!(!links.contains("tsr"), "{links}");
}
