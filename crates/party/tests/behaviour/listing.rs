//! Pages of a listing (`Party::list_page`): a page with a data filter examines a bounded
//! number of tasks, and paging on from where it stopped finds every match once.

use party::jiff::SignedDuration;
use party::policy::DATA_FILTER_SCAN;
use party::serde_json::json;
use party::{ListFilter, NewTask, TaskId, builtin};

use crate::common::{Backend, fixture, on_every_backend, set_finished, t0};

async fn a_data_filter_page_examines_a_bounded_number_of_tasks(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    // DATA_FILTER_SCAN + 5 tasks a second apart; the ones at these places match.
    let total = DATA_FILTER_SCAN as i64 + 5;
    let matching = [2, 3, DATA_FILTER_SCAN as i64 + 2];
    let tasks = (0..total)
        .map(|i| {
            let customer = if matching.contains(&i) {
                "acme"
            } else {
                "other"
            };
            NewTask::new("noop")
                .at(t0() + SignedDuration::from_secs(i))
                .data(json!({ "customer": customer, "i": i }))
        })
        .collect();
    let ids: Vec<TaskId> = f.party.add_many(tasks).await.unwrap();
    // One match is finished: the page reads the history the same way.
    set_finished(&f, ids[2], "done").await;
    let acme = party::validate::data_match("customer=acme").unwrap();
    let filter = ListFilter {
        data: Some(acme.clone()),
        limit: Some(10),
        ..Default::default()
    };

    // The first page examines DATA_FILTER_SCAN tasks: two matches among them, and it says
    // where it stopped.
    let first = f.party.list_page(&filter).await.unwrap();
    let got: Vec<TaskId> = first.tasks.iter().map(|t| t.id).collect();
    assert_eq!(got, vec![ids[2], ids[3]]);
    let stop = ids[DATA_FILTER_SCAN as usize - 1];
    assert_eq!(first.examined_to.map(|c| c.id), Some(stop));
    assert_eq!(first.next, first.examined_to);
    // The next page goes on from there, finds the last match and ends the listing.
    let second = f
        .party
        .list_page(&ListFilter {
            cursor: first.next,
            ..filter.clone()
        })
        .await
        .unwrap();
    let got: Vec<TaskId> = second.tasks.iter().map(|t| t.id).collect();
    assert_eq!(got, vec![ids[DATA_FILTER_SCAN as usize + 2]]);
    assert_eq!(second.next, None);
    assert_eq!(second.examined_to, None);

    // A page that fills before the bound ends at its last task, not at the bound.
    let one = f
        .party
        .list_page(&ListFilter {
            limit: Some(1),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(one.tasks.len(), 1);
    assert_eq!(one.next, Some(one.tasks[0].cursor()));
    assert_eq!(one.examined_to, None);

    // A page without a data filter is never bounded: a full page and its next cursor.
    let plain = f
        .party
        .list_page(&ListFilter {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        plain.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids[..3]
    );
    assert_eq!(plain.next, Some(plain.tasks[2].cursor()));
    assert_eq!(plain.examined_to, None);
    // The last page of a plain listing has no next cursor.
    let last = f
        .party
        .list_page(&ListFilter {
            cursor: Some(plain.tasks[2].cursor()),
            limit: Some(u32::try_from(total).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.tasks.len(), total as usize - 3);
    assert_eq!(last.next, None);
}

on_every_backend!(a_data_filter_page_examines_a_bounded_number_of_tasks);
