//! NetworkPolicy, native and Romana semantics, case by case, through `simulate`.

use std::net::IpAddr;

use tessera_policy::Inputs;
use tessera_policy::simulate::{parse_probe, simulate};

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop, labels: {app: web, tessera.io/segment: front}}
  spec: {containers: [{ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}]}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: shop, labels: {app: db}}
  spec: {containers: [{ports: [{name: pg, containerPort: 5432}]}]}
  status: {podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: mon, namespace: ops, labels: {app: mon}}
  status: {podIP: 10.0.1.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: pending, namespace: ops}
"#;

struct Case {
    inputs: Inputs,
}

impl Case {
    fn new(policies: &str) -> Case {
        let mut inputs = Inputs::default();
        inputs.add_text("pods.yaml", PODS).expect("pods");
        inputs.add_text("policies.yaml", policies).expect("policies");
        Case { inputs }
    }

    fn allowed(&self, from: &str, to: &str, probe: &str) -> bool {
        let externals: Vec<IpAddr> = ["192.0.2.9", "10.0.0.200"].iter().map(|s| s.parse().expect("ip")).collect();
        let verdicts = simulate(&self.inputs, &externals, &[parse_probe(probe).expect("probe")]).expect("simulate");
        let v = verdicts.iter().find(|v| v.from == from && v.to == to).unwrap_or_else(|| panic!("no verdict {from} -> {to}"));
        v.allowed
    }

    fn expect(&self, table: &[(&str, &str, &str, bool)]) {
        for (from, to, probe, want) in table {
            assert_eq!(self.allowed(from, to, probe), *want, "{from} -> {to} {probe}");
        }
    }
}

#[test]
fn no_policy_allows_everything_and_pods_without_ip_are_skipped() {
    let c = Case::new("");
    c.expect(&[("shop/web", "shop/db", "tcp/1", true), ("192.0.2.9", "ops/mon", "udp/53", true), ("ops/mon", "192.0.2.9", "sctp/9", true)]);
    let v = simulate(&c.inputs, &[], &[parse_probe("tcp/80").expect("probe")]).expect("simulate");
    assert_eq!(v.len(), 6, "3 pods with IPs: 6 ordered pairs");
}

#[test]
fn default_deny_ingress_and_the_difference_between_missing_and_empty() {
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n";
    Case::new(deny).expect(&[
        ("ops/mon", "shop/db", "tcp/5432", false),
        ("shop/web", "shop/db", "tcp/5432", false),
        ("192.0.2.9", "shop/web", "tcp/8080", false),
        ("shop/db", "ops/mon", "tcp/80", true),
        ("shop/db", "192.0.2.9", "tcp/80", true),
    ]);
    let empty_list = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: []}\n";
    Case::new(empty_list).expect(&[("ops/mon", "shop/db", "tcp/5432", false)]);
    let empty_rule = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{}]}\n";
    Case::new(empty_rule).expect(&[("ops/mon", "shop/db", "tcp/5432", true), ("192.0.2.9", "shop/db", "udp/7", true)]);
    let empty_from = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [], ports: [{port: 80}]}]}\n";
    Case::new(empty_from).expect(&[
        ("192.0.2.9", "shop/db", "tcp/80", true),
        ("192.0.2.9", "shop/db", "udp/80", false),
        ("ops/mon", "shop/db", "tcp/81", false),
    ]);
}

#[test]
fn policy_types_default_from_the_presence_of_egress_rules() {
    // Egress rules and no policyTypes: the policy isolates ingress (with no ingress rules) AND egress.
    let with_egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  egress: [{to: [{namespaceSelector: {matchLabels: {team: ops}}}]}]\n";
    Case::new(with_egress).expect(&[
        ("shop/db", "ops/mon", "tcp/1", true),
        ("shop/db", "shop/web", "tcp/1", false),
        ("ops/mon", "shop/db", "tcp/1", false),
    ]);
    // `egress: []` does not count as egress rules: ingress only.
    let empty_egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {matchLabels: {app: db}}, egress: []}\n";
    Case::new(empty_egress).expect(&[("shop/db", "shop/web", "tcp/1", true), ("shop/web", "shop/db", "tcp/1", false)]);
    // Explicit Egress only: ingress untouched, egress denied.
    let egress_only = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Egress]}\n";
    Case::new(egress_only).expect(&[("shop/db", "shop/web", "tcp/1", false), ("shop/web", "shop/db", "tcp/1", true)]);
}

#[test]
fn peers_combine_selectors_with_and_and_list_entries_with_or() {
    let and = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: web}}}]}]\n";
    Case::new(and).expect(&[("ops/mon", "shop/db", "tcp/1", false), ("shop/web", "shop/db", "tcp/1", false)]);
    let or = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: ops}}}, {podSelector: {matchLabels: {app: web}}}]}]\n";
    Case::new(or).expect(&[
        ("ops/mon", "shop/db", "tcp/1", true),
        ("shop/web", "shop/db", "tcp/1", true),
        ("192.0.2.9", "shop/db", "tcp/1", false),
    ]);
    // podSelector alone means the policy's own namespace; the automatic name label works.
    let own = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {}}, {namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [ops]}]}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}}]}]\n";
    Case::new(own).expect(&[("shop/web", "shop/db", "tcp/1", true), ("ops/mon", "shop/db", "tcp/1", true)]);
}

#[test]
fn ip_blocks_match_any_address_including_pods_minus_except() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]\n";
    Case::new(p).expect(&[
        ("shop/web", "shop/db", "tcp/1", true),
        ("10.0.0.200", "shop/db", "tcp/1", true),
        ("ops/mon", "shop/db", "tcp/1", false),
        ("192.0.2.9", "shop/db", "tcp/1", false),
    ]);
}

#[test]
fn ports_named_numbered_ranges_and_protocols() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}, {port: dns, protocol: UDP}, {port: 9000, endPort: 9010, protocol: SCTP}]}]\n";
    Case::new(p).expect(&[
        ("ops/mon", "shop/web", "tcp/8080", true),
        ("ops/mon", "shop/web", "udp/8080", false),
        ("ops/mon", "shop/web", "udp/53", true),
        ("ops/mon", "shop/db", "tcp/8080", false),
        ("ops/mon", "shop/db", "sctp/9010", true),
        ("ops/mon", "shop/db", "sctp/9011", false),
        ("ops/mon", "shop/db", "tcp/9000", false),
    ]);
    // An egress rule's named port resolves on the destination; an external address has none.
    let egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ops}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: pg}]}]\n";
    Case::new(egress).expect(&[
        ("ops/mon", "shop/db", "tcp/5432", true),
        ("ops/mon", "shop/web", "tcp/5432", false),
        ("ops/mon", "192.0.2.9", "tcp/5432", false),
    ]);
}

#[test]
fn both_egress_of_source_and_ingress_of_destination_must_allow() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: ops}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}]}]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: shop}\nspec: {podSelector: {matchLabels: {app: db}}, ingress: [{from: [{podSelector: {}}]}]}\n";
    Case::new(p).expect(&[
        ("ops/mon", "shop/web", "tcp/1", true),
        ("ops/mon", "shop/db", "tcp/1", false),
        ("ops/mon", "192.0.2.9", "tcp/1", false),
        ("shop/web", "shop/db", "tcp/1", true),
    ]);
}

#[test]
fn cluster_tiers_admin_before_and_baseline_after_namespace_policies() {
    let p = r#"
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: block-ops}
spec:
  tier: admin
  priority: 10
  subject: {namespaceSelector: {matchLabels: {team: shop}}}
  ingress:
  - {action: pass, from: [{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: mon}}}], ports: [{protocol: tcp, port: 9100}]}
  - {action: deny, from: [{namespaceSelector: {matchLabels: {team: ops}}}]}
---
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: allow-web-first}
spec:
  tier: admin
  priority: 5
  subject: {podSelector: {matchLabels: {app: db}}}
  ingress: [{action: allow, from: [{cidr: 192.0.2.0/24}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 9100}]}]}
---
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: default-deny}
spec:
  tier: baseline
  priority: 1
  ingress: [{action: deny, from: [{any: true}]}]
"#;
    Case::new(p).expect(&[
        // Admin deny beats namespace allow.
        ("ops/mon", "shop/db", "tcp/5432", false),
        // Pass hands over to the NetworkPolicy, which allows 9100.
        ("ops/mon", "shop/db", "tcp/9100", true),
        ("ops/mon", "shop/web", "tcp/9100", false),
        // Priority 5 allows before priority 10 even though db is isolated by a NetworkPolicy.
        ("192.0.2.9", "shop/db", "tcp/22", true),
        // Not isolated by any NetworkPolicy: the baseline deny applies.
        ("192.0.2.9", "shop/web", "tcp/80", false),
        ("shop/db", "ops/mon", "tcp/80", false),
        // Isolated by the NetworkPolicy: baseline does not apply, the NetworkPolicy decides.
        ("shop/web", "shop/db", "tcp/9100", true),
    ]);
}

#[test]
fn native_tenant_policies_segments_and_icmp() {
    let p = r#"
apiVersion: tessera.io/v1
kind: TesseraPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{segment: front}]
    ports: [{protocol: tcp, port: 5432}, {protocol: icmp, type: 8}]
  - from: [{tenant: ops}]
    ports: [{protocol: any}]
"#;
    Case::new(p).expect(&[
        ("shop/web", "shop/db", "tcp/5432", true),
        ("shop/web", "shop/db", "tcp/5433", false),
        ("shop/web", "shop/db", "icmp/8", true),
        ("shop/web", "shop/db", "icmp/0", false),
        ("ops/mon", "shop/db", "udp/1", true),
        ("192.0.2.9", "shop/db", "tcp/5432", false),
    ]);
}

#[test]
fn romana_policies_are_read_unchanged() {
    let p = r#"{"securitypolicies": [{"name": "pol1", "description": "", "direction": "ingress",
        "applied_to": [{"tenant": "shop", "segment": "default"}],
        "ingress": [{"peers": [{"tenant": "shop", "segment": "front"}], "rules": [{"protocol": "TCP", "ports": [5432], "port_ranges": [[6000, 6010]]}]},
                    {"peers": [{"cidr": "192.0.2.0/24"}], "rules": [{"protocol": "icmp", "icmp_type": 8, "icmp_code": 0}]}]}]}"#;
    Case::new(p).expect(&[
        ("shop/web", "shop/db", "tcp/5432", true),
        ("shop/web", "shop/db", "tcp/6005", true),
        ("shop/web", "shop/db", "udp/5432", false),
        ("192.0.2.9", "shop/db", "icmp/8", true),
        ("ops/mon", "shop/db", "tcp/5432", false),
        // web is in segment front, not default: not subject to the policy.
        ("ops/mon", "shop/web", "tcp/1", true),
    ]);
}

#[test]
fn invalid_input_names_file_object_and_field() {
    let cases = [
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80}, {port: 8080, endPort: 80}]}]\n",
            "spec.ingress[0].ports[1].endPort: must be >= port (8080)",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{}]}]}\n",
            "spec.ingress[0].from[0]: must specify a peer",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}\n",
            "may not specify both ipBlock and another peer",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]}\n",
            "spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}\n",
            "spec.ingress[0].ports[0].protocol: `ICMP` is not one of TCP, UDP, SCTP",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{ports: [{port: http, endPort: 90}]}]}\n",
            "endPort: may not be specified when `port` is non-numeric",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingres: []}\n",
            "unknown field `ingres`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Inbound]}\n",
            "spec.policyTypes[0]",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}\n",
            "spec.podSelector.matchExpressions[0].values",
        ),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: shop}\nstatus: {podIP: 10.0.0.1}\n", "is also the address of shop/web"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", "`Service` is not a kind"),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: x}\nspec: {priority: 1, subject: {namespaces: {}}, egress: [{action: Allow, to: [{domainNames: [example.com]}]}]}\n",
            "AdminNetworkPolicy x: spec.egress[0].to[0].domainNames: domain-name (FQDN) peers are not enforced",
        ),
        (
            "{\"name\": \"r\", \"applied_to\": [{\"tenant\": \"shop\"}], \"ingress\": [{\"peers\": [{\"peer\": \"local\"}], \"rules\": []}]}",
            "cannot be enforced exactly",
        ),
    ];
    for (doc, want) in cases {
        let mut inputs = Inputs::default();
        inputs.add_text("pods.yaml", PODS).expect("pods");
        let before = inputs.clone();
        let err = inputs.add_text("bad.yaml", doc).expect_err(doc).to_string();
        assert!(err.contains(want), "{err}\n  wanted: {want}");
        assert!(err.starts_with("bad.yaml document 1"), "{err}");
        assert_eq!(inputs, before, "a failed file adds nothing");
    }
}

/// What the API server accepts and defaults, Tessera accepts and defaults the same way.
#[test]
fn optional_and_defaulted_fields_are_read_as_the_api_server_defaults_them() {
    // No podSelector: every pod of the namespace (networking/v1 made it optional).
    let no_selector = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}\n";
    let empty_selector = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}\n";
    // `policyTypes: []` is defaulted exactly like a missing list.
    let empty_types = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}, policyTypes: [], ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}\n";
    let expected = simulate(&Case::new(empty_selector).inputs, &[], &[parse_probe("tcp/80").expect("probe")]).expect("simulate");
    for doc in [no_selector, empty_types] {
        let got = simulate(&Case::new(doc).inputs, &[], &[parse_probe("tcp/80").expect("probe")]).expect("simulate");
        assert_eq!(got, expected, "{doc}");
    }
    Case::new(no_selector).expect(&[("shop/web", "shop/db", "tcp/80", true), ("ops/mon", "shop/db", "tcp/80", false)]);
    // `policyTypes: []` with egress rules: Ingress (isolating, no rules) and Egress, as defaults.go says.
    let egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {policyTypes: [], egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]}\n";
    Case::new(egress).expect(&[
        ("shop/web", "shop/db", "tcp/80", false),
        ("shop/web", "ops/mon", "tcp/80", false),
        ("ops/mon", "shop/web", "tcp/80", false),
        ("ops/mon", "192.0.2.9", "tcp/80", true),
    ]);
}

#[test]
fn what_the_api_server_refuses_is_refused_and_strict_admission_says_so() {
    let cases = [
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {policyTypes: [Ingress, Egress, Ingress]}\n",
            "spec.policyTypes: may not specify more than two policyTypes",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: P_1, namespace: shop}\nspec: {}\n",
            "metadata.name: `P_1` is not a valid name",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Web, namespace: shop}\nstatus: {podIP: 10.0.9.1}\n",
            "metadata.name: `Web` is not a valid name",
        ),
    ];
    for (doc, want) in cases {
        let mut inputs = Inputs::default();
        let err = inputs.add_text("bad.yaml", doc).expect_err(doc);
        assert!(err.to_string().contains(want), "{err}\n  wanted: {want}");
        assert_eq!(err.kind, tessera_policy::error::Refusal::Invalid);
        assert!(!err.to_string().contains("strict admission"), "{err}");
    }
    let romana =
        "{\"name\": \"r\", \"applied_to\": [{\"tenant\": \"shop\"}], \"ingress\": [{\"peers\": [{\"peer\": \"local\"}], \"rules\": []}]}";
    let err = Inputs::default().add_text("r.json", romana).expect_err("peer local");
    assert_eq!(err.kind, tessera_policy::error::Refusal::Unenforceable);
    assert!(err.to_string().contains("strict admission"), "{err}");
}

#[test]
fn pods_that_take_part_in_no_traffic_are_skipped_with_their_reason() {
    let pods = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: done, namespace: a}, status: {phase: Succeeded, podIP: 10.0.0.1}}\n- {apiVersion: v1, kind: Pod, metadata: {name: host, namespace: a}, spec: {hostNetwork: true}, status: {podIP: 192.0.2.1}}\n- {apiVersion: v1, kind: Pod, metadata: {name: new, namespace: a}}\n- {apiVersion: v1, kind: Pod, metadata: {name: up, namespace: a}, status: {phase: Running, podIP: 10.0.0.1}}\n";
    let mut inputs = Inputs::default();
    inputs.add_text("pods.yaml", pods).expect("valid");
    let skipped: Vec<(&str, &str)> = inputs.skipped.iter().map(|s| (s.id.as_str(), s.reason)).collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped[0].0 == "a/done" && skipped[0].1.contains("Succeeded"), "{skipped:?}");
    assert!(skipped[1].0 == "a/host" && skipped[1].1.contains("hostNetwork"), "{skipped:?}");
    assert!(skipped[2].0 == "a/new" && skipped[2].1.contains("podIP"), "{skipped:?}");
    // The finished pod's address belongs to the running one now: no conflict.
    assert_eq!(inputs.cluster.endpoints.keys().collect::<Vec<_>>(), ["a/up"]);
}

#[test]
fn simulate_answers_every_ordered_pair_of_distinct_parties() {
    let pods = format!("{PODS}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: six, namespace: ops}}\nstatus: {{podIP: 'fd00::6'}}\n");
    let mut inputs = Inputs::default();
    inputs.add_text("pods.yaml", &pods).expect("pods");
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {}\n";
    inputs.add_text("deny.yaml", deny).expect("policy");
    let externals: Vec<IpAddr> = ["192.0.2.9", "2001:db8::9", "192.0.2.10"].iter().map(|s| s.parse().expect("ip")).collect();
    let probes = [parse_probe("tcp/80").expect("probe"), parse_probe("udp/53").expect("probe")];
    let verdicts = simulate(&inputs, &externals, &probes).expect("simulate");
    let parties = 4 + externals.len();
    assert_eq!(verdicts.len(), parties * (parties - 1) * probes.len());
    let find = |from: &str, to: &str| verdicts.iter().find(|v| v.from == from && v.to == to).unwrap_or_else(|| panic!("{from} -> {to}"));
    // Two externals: no policy side, allowed, whatever their families.
    assert!(find("192.0.2.9", "192.0.2.10").allowed);
    let mixed = find("192.0.2.9", "2001:db8::9");
    assert!(!mixed.allowed && mixed.reason.contains("no address family in common"), "{mixed:?}");
    // A pod with no family in common with another: denied, and the reason says why.
    let v = find("ops/six", "shop/web");
    assert!(!v.allowed && v.reason.contains("ops/six: IPv6 only") && v.reason.contains("shop/web: IPv4 only"), "{v:?}");
    // Policies decide every other pair as before.
    assert!(!find("ops/mon", "shop/web").allowed);
    assert!(find("shop/web", "ops/mon").allowed);
}

#[test]
fn hostile_yaml_fails_fast_with_a_clear_error() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = Inputs::default().add_text("deep.yaml", &deep).expect_err("too deep");
    assert!(err.to_string().contains("not valid YAML or JSON"), "{err}");
}

#[test]
fn network_policy_api_cluster_policies_in_their_tiers() {
    let p = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: db-guard}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {name: metrics, action: Pass, from: [{namespaces: {matchLabels: {team: ops}}}], ports: [{portNumber: {protocol: TCP, port: 9100}}]}
  - {action: Deny, from: [{namespaces: {matchLabels: {team: ops}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: ops-ssh}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {team: shop}}}
  ingress:
  - {action: Accept, from: [{pods: {namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: mon}}}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}
  egress:
  - {action: Deny, to: [{networks: [192.0.2.0/24]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 9100}]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: shop-inside}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  ingress:
  - {action: Pass, from: [{namespaces: {matchLabels: {team: shop}}}]}
  - {action: Deny, from: [{namespaces: {matchLabels: {team: ops}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
"#;
    Case::new(p).expect(&[
        // The admin ClusterNetworkPolicy (priority 5) accepts before the ANP (10) denies, and
        // although a NetworkPolicy isolates db.
        ("ops/mon", "shop/db", "tcp/22", true),
        // The ANP denies the rest from ops, except 9100 which it passes to the NetworkPolicy.
        ("ops/mon", "shop/db", "tcp/5432", false),
        ("ops/mon", "shop/db", "tcp/9100", true),
        // Isolated by the NetworkPolicy: it decides, the baseline tier does not apply.
        ("shop/web", "shop/db", "tcp/9100", true),
        ("shop/web", "shop/db", "tcp/5432", false),
        // Not isolated: a baseline Pass leaves the tier for the default (the later
        // BaselineAdminNetworkPolicy deny is not reached) ...
        ("shop/db", "shop/web", "tcp/80", true),
        ("shop/web", "ops/mon", "tcp/80", true),
        // ... while the baseline deny applies to the rest.
        ("ops/mon", "shop/web", "tcp/80", false),
        // A namespaces peer is pods only: an outside address matches neither baseline policy.
        ("192.0.2.9", "shop/web", "tcp/80", true),
        // Egress to a network, for the subject only.
        ("shop/web", "192.0.2.9", "tcp/443", false),
        ("ops/mon", "192.0.2.9", "tcp/443", true),
    ]);
}
