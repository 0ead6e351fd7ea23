//! `party next` and `party gaps`: a recurring task's future and past occurrences.

use party::{Party, TaskError, format_time};

use crate::args::{GapsArgs, NextArgs};
use crate::output;

/// Print the next occurrences of a task with a stored rule.
pub(crate) async fn next(party: &Party, args: NextArgs) -> Result<(), TaskError> {
    let times = party.next_occurrences(args.id, args.count).await?;
    if args.json {
        let times: Vec<String> = times.into_iter().map(format_time).collect();
        return output::print_json(&times);
    }
    let mut text = String::new();
    for t in times {
        text.push_str(&format_time(t));
        text.push('\n');
    }
    if text.is_empty() {
        text.push_str("the rule has no further occurrences\n");
    }
    output::print(&text)
}

/// Print which expected occurrences are missing or doubled in a task's run history.
pub(crate) async fn gaps(party: &Party, args: GapsArgs) -> Result<(), TaskError> {
    let report = party.gaps(args.id).await?;
    if args.json {
        return output::print_json(&report);
    }
    let mut text = format!("{} occurrences expected so far", report.expected);
    if report.truncated {
        text.push_str(" (checked the first ones only)");
    }
    text.push('\n');
    if report.missing.is_empty() && report.doubled.is_empty() && report.unexpected.is_empty() {
        text.push_str("every expected occurrence ran exactly once\n");
    }
    for t in &report.missing {
        text.push_str(&format!("missing  {}\n", format_time(*t)));
    }
    for (t, n) in &report.doubled {
        text.push_str(&format!(
            "doubled  {} ({n} successful runs)\n",
            format_time(*t)
        ));
    }
    for t in &report.unexpected {
        text.push_str(&format!(
            "unexpected  {} (a run the rule does not produce)\n",
            format_time(*t)
        ));
    }
    output::print(&text)
}
