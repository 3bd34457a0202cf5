//! Kubernetes label selectors: `matchLabels` and `matchExpressions` (In, NotIn, Exists,
//! DoesNotExist), ANDed. An empty selector selects everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| match r.operator {
                Operator::In => labels.get(&r.key).is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => labels.get(&r.key).is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => labels.contains_key(&r.key),
                Operator::DoesNotExist => !labels.contains_key(&r.key),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Validate as the Kubernetes API server does; `field` is the selector's path.
    pub fn validate(&self, field: &str) -> Result<(), PolicyError> {
        for (k, v) in &self.match_labels {
            validate_key(&format!("{field}.matchLabels"), k)?;
            validate_value(&format!("{field}.matchLabels.{k}"), v)?;
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            validate_key(&format!("{f}.key"), &r.key)?;
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(PolicyError::field(format!("{f}.values"), "must be specified when `operator` is 'In' or 'NotIn'"));
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(PolicyError::field(
                        format!("{f}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
                _ => {}
            }
            for (j, v) in r.values.iter().enumerate() {
                validate_value(&format!("{f}.values[{j}]"), v)?;
            }
        }
        Ok(())
    }
}

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn validate_key(field: &str, key: &str) -> Result<(), PolicyError> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let prefix_ok = prefix.is_empty()
        || (prefix.len() <= 253
            && prefix.split('.').all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !p.starts_with('-')
                    && !p.ends_with('-')
            }));
    if prefix_ok && name_part_ok(name) && key.matches('/').count() <= 1 {
        Ok(())
    } else {
        Err(PolicyError::field(field, format!("`{key}` is not a valid label key ([prefix/]name, name at most 63 characters)")))
    }
}

pub fn validate_value(field: &str, value: &str) -> Result<(), PolicyError> {
    if value.is_empty() || name_part_ok(value) {
        Ok(())
    } else {
        Err(PolicyError::field(
            field,
            format!("`{value}` is not a valid label value (at most 63 characters of letters, digits, '-', '_', '.')"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (expr("app", Operator::In, &["web", "db"]), true),
            (expr("app", Operator::In, &["db"]), false),
            (expr("app", Operator::NotIn, &["db"]), true),
            (expr("missing", Operator::NotIn, &["db"]), true),
            (expr("app", Operator::NotIn, &["web"]), false),
            (expr("tier", Operator::Exists, &[]), true),
            (expr("missing", Operator::Exists, &[]), false),
            (expr("missing", Operator::DoesNotExist, &[]), true),
            (expr("app", Operator::DoesNotExist, &[]), false),
        ];
        for (r, want) in cases {
            let s = LabelSelector { match_labels: Labels::new(), match_expressions: vec![r.clone()] };
            assert_eq!(s.matches(&l), want, "{r:?}");
        }
        assert!(LabelSelector::default().matches(&Labels::new()));
        let both =
            LabelSelector { match_labels: labels(&[("app", "web")]), match_expressions: vec![expr("tier", Operator::In, &["back"])] };
        assert!(!both.matches(&l), "matchLabels and matchExpressions are ANDed");
    }

    #[test]
    fn validation_names_the_field() {
        let s = LabelSelector { match_labels: Labels::new(), match_expressions: vec![expr("app", Operator::In, &[])] };
        assert_eq!(s.validate("spec.podSelector").expect_err("empty In").field, "spec.podSelector.matchExpressions[0].values");
        let s = LabelSelector { match_labels: labels(&[("bad key!", "x")]), match_expressions: vec![] };
        assert_eq!(s.validate("sel").expect_err("bad key").field, "sel.matchLabels");
    }
}
