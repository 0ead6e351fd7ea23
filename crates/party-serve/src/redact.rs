//! Hiding data fields (`party serve --redact data.card,data.token`, and each handler's
//! [`party::Task::REDACT`]) from every API answer and dashboard page: the field stays in the store and reaches handlers; readers see
//! [`REDACTED`] instead of its value.

use std::collections::BTreeMap;

use party::TaskError;
use serde_json::Value;

/// What a redacted field shows.
pub(crate) const REDACTED: &str = "[redacted]";

/// The fields to hide, each a path below `data`: those of `--redact` on every task, and those a
/// handler declares ([`party::Task::REDACT`]) on its own tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redaction {
    paths: Vec<Vec<String>>,
    by_handler: BTreeMap<String, Vec<Vec<String>>>,
}

impl Redaction {
    /// `paths` as `--redact` gives them (`data.card`), and each handler's declared fields
    /// (`card`, below `data`), every one checked by [`party::validate::redact_path`].
    pub(crate) fn new(
        paths: &[String],
        handlers: &[(String, &'static [&'static str])],
    ) -> Result<Redaction, TaskError> {
        let mut by_handler = BTreeMap::new();
        for (name, fields) in handlers {
            let checked = fields
                .iter()
                .map(|f| {
                    party::validate::redact_path(&format!("data.{f}")).map_err(|e| {
                        TaskError::invalid(format!(
                            "handler '{name}' declares a field to redact that cannot be one \
                             (Task::REDACT lists fields below the data, like \"card\" or \
                             \"payment.token\"): {e}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            by_handler.insert(name.clone(), checked);
        }
        Ok(Redaction {
            paths: paths
                .iter()
                .map(|p| party::validate::redact_path(p))
                .collect::<Result<_, _>>()?,
            by_handler,
        })
    }

    /// Refuse a data filter on a field that is hidden (for any handler), or holds a hidden
    /// field: the tasks it lists would tell its value, one guess at a time.
    pub(crate) fn check_filter(&self, field: &str) -> Result<(), TaskError> {
        let own = self.by_handler.values().flatten();
        if self
            .paths
            .iter()
            .chain(own)
            .any(|p| p.first().is_some_and(|f| f == field))
        {
            return Err(TaskError::invalid(format!(
                "data.{field} is redacted, so tasks cannot be filtered by it; filter by another \
                 field"
            )));
        }
        Ok(())
    }

    /// Hide the fields in the data object of a task of `handler`.
    pub(crate) fn data(&self, handler: &str, data: &mut Value) {
        let own = self.by_handler.get(handler).into_iter().flatten();
        for path in self.paths.iter().chain(own) {
            hide(data, path);
        }
    }

    /// Hide the fields in a task as JSON (its `data` member, by its `handler`).
    pub(crate) fn task(&self, task: &mut Value) {
        let handler = task["handler"].as_str().unwrap_or_default().to_string();
        if let Some(data) = task.get_mut("data") {
            self.data(&handler, data);
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
        let r = Redaction::new(&["data.card".into(), "data.pay.token".into()], &[]).unwrap();
        let mut t = json!({"id": "x", "handler": "h", "data": {"card": "4242", "pay": {"token": "t", "amount": 3}, "name": "acme"}});
        r.task(&mut t);
        assert_eq!(
            t["data"],
            json!({"card": REDACTED, "pay": {"token": REDACTED, "amount": 3}, "name": "acme"})
        );
        let mut absent = json!({"handler": "h", "data": {"other": 1}});
        r.task(&mut absent);
        assert_eq!(absent["data"], json!({"other": 1}));
    }

    #[test]
    fn a_handlers_fields_are_hidden_on_its_own_tasks_only() {
        let r = Redaction::new(&[], &[("pay".into(), &["card", "bank.iban"])]).unwrap();
        let mut mine =
            json!({"handler": "pay", "data": {"card": "4242", "bank": {"iban": "DE1"}, "n": 1}});
        r.task(&mut mine);
        assert_eq!(
            mine["data"],
            json!({"card": REDACTED, "bank": {"iban": REDACTED}, "n": 1})
        );
        let mut other = json!({"handler": "log", "data": {"card": "4242"}});
        r.task(&mut other);
        assert_eq!(other["data"]["card"], "4242");
        let e = Redaction::new(&[], &[("pay".into(), &["a..b"])]).unwrap_err();
        assert!(e.to_string().contains("handler 'pay' declares"), "{e}");
    }
}
