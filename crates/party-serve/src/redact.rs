//! Hiding data fields (`party serve --redact data.card,data.token`) from every API answer and
//! dashboard page: the field stays in the store and reaches handlers; readers see
//! [`REDACTED`] instead of its value.

use party::TaskError;
use serde_json::Value;

/// What a redacted field shows.
pub(crate) const REDACTED: &str = "[redacted]";

/// The fields to hide, each a path below `data`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redaction {
    paths: Vec<Vec<String>>,
}

impl Redaction {
    pub(crate) fn new(paths: &[String]) -> Result<Redaction, TaskError> {
        Ok(Redaction {
            paths: paths
                .iter()
                .map(|p| party::validate::redact_path(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Hide the fields in one task's data object.
    pub(crate) fn data(&self, data: &mut Value) {
        for path in &self.paths {
            hide(data, path);
        }
    }

    /// Hide the fields in a task as JSON (its `data` member).
    pub(crate) fn task(&self, task: &mut Value) {
        if let Some(data) = task.get_mut("data") {
            self.data(data);
        }
    }
}

fn hide(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let Some(field) = obj.get_mut(first) else {
        return;
    };
    if rest.is_empty() {
        *field = Value::String(REDACTED.to_string());
    } else {
        hide(field, rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_fields_are_hidden_and_others_kept() {
        let r = Redaction::new(&["data.card".into(), "data.pay.token".into()]).unwrap();
        let mut t = json!({"id": "x", "data": {"card": "4242", "pay": {"token": "t", "amount": 3}, "name": "acme"}});
        r.task(&mut t);
        assert_eq!(
            t["data"],
            json!({"card": REDACTED, "pay": {"token": REDACTED, "amount": 3}, "name": "acme"})
        );
        let mut absent = json!({"data": {"other": 1}});
        r.task(&mut absent);
        assert_eq!(absent["data"], json!({"other": 1}));
    }
}
