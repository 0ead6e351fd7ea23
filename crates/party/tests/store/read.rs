//! The reads: `task_get`, `task_list` (filters, order, limit), `task_next_due` and `stats`.

use party::store::{InsertTask, Next, StatsParams, StoreStats};
use party::{ListFilter, State, TaskId, TaskInfo};

use crate::harness::{
    Backend, Harness, claim_on, failed, finish, on_every_backend, recurring, secs, t0, task,
    task_at,
};

/// `task_successes` reads a task's latest successful run and those of its occurrences from
/// `since` on (at most `limit`, the latest), from `runs` and from the run a finished task's
/// history row keeps; failed runs are not successes.
async fn successes_read_the_latest_runs_of_live_and_finished_tasks(b: Backend) {
    use party::store::{SuccessParams, Successes};
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let hour = secs(3600);
    let ended = recurring("noop", "{}");
    let live = recurring("other", "{}");
    let never = task("third");
    h.insert(vec![ended.clone(), live.clone(), never.clone()])
        .await;
    let next = |n: i32| Next::Reschedule {
        timestamp: t0() + hour * n,
        due_at: t0() + hour * n,
        last_run_on: None,
    };
    // `ended`: succeeded, failed, succeeded, then succeeded for good (kept on its history row).
    let c = h.claim_one("noop", t0()).await;
    h.finish(finish(&c, t0() + secs(10), next(1))).await;
    let c = h.claim_one("noop", t0() + hour).await;
    h.finish(failed(&c, t0() + hour + secs(10), "boom", next(2)))
        .await;
    let c = h.claim_one("noop", t0() + hour * 2).await;
    h.finish(finish(&c, t0() + hour * 2 + secs(20), next(3)))
        .await;
    let c = h.claim_one("noop", t0() + hour * 3).await;
    h.finish(finish(&c, t0() + hour * 3 + secs(5), Next::Done))
        .await;
    assert_eq!(h.get(ended.id).await.state, State::Done);
    // `live`: one success, still scheduled.
    let c = h.claim_one("other", t0()).await;
    h.finish(finish(&c, t0() + secs(1), next(1))).await;

    let read = |tasks: Vec<(TaskId, party::jiff::Timestamp)>, limit: u32| {
        let store = h.store.clone();
        async move {
            store
                .task_successes(SuccessParams {
                    tasks: &tasks,
                    limit,
                })
                .await
                .unwrap()
        }
    };
    let last = Some(t0() + hour * 3 + secs(5));
    assert_eq!(
        read(
            vec![(ended.id, t0() + hour), (live.id, t0()), (never.id, t0()),],
            10
        )
        .await,
        vec![
            Successes {
                last_finished_at: last,
                since: vec![t0() + hour * 3, t0() + hour * 2],
                before: true,
            },
            Successes {
                last_finished_at: Some(t0() + secs(1)),
                since: vec![t0()],
                before: false,
            },
            Successes::default(),
        ]
    );
    // At most `limit`, the latest; nothing from `since` on, and an earlier success.
    assert_eq!(
        read(vec![(ended.id, t0()), (ended.id, t0() + hour * 4)], 1).await,
        vec![
            Successes {
                last_finished_at: last,
                since: vec![t0() + hour * 3],
                before: false,
            },
            Successes {
                last_finished_at: last,
                since: vec![],
                before: true,
            },
        ]
    );
    assert_eq!(read(vec![], 10).await, vec![]);
}

async fn get_answers_none_for_an_unknown_id(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![task("noop")]).await;
    assert_eq!(
        h.store.task_get(TaskId::generate(t0())).await.unwrap(),
        None
    );
}

/// Every task of a listing of every state, read `limit` tasks a page, each page after the
/// cursor of the last one; a task seen more than `most` times over is a page repeating one.
async fn page_through(h: &Harness, limit: u32, most: usize) -> Vec<TaskInfo> {
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .store
            .task_list(&ListFilter {
                limit: Some(limit),
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor());
        paged.extend(page);
        assert!(paged.len() <= most, "pages never repeat a task");
    }
    paged
}

/// Every task of a listing of every state, read one page of one task at a time: its id and
/// state.
async fn one_page_each(h: &Harness) -> Vec<(TaskId, State)> {
    let paged = page_through(h, 1, 100).await;
    paged.into_iter().map(|t| (t.id, t.state)).collect()
}

async fn list_orders_by_due_time_then_id_and_filters(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    // Due times out of insertion order, two of them equal (then the id decides).
    let c = task_at("noop", t0() + secs(30));
    let a = task_at("noop", t0() - secs(30));
    let b1 = task_at("other", t0());
    let b2 = task_at("noop", t0());
    h.insert(vec![c.clone(), a.clone(), b1.clone(), b2.clone()])
        .await;
    let (mut first, mut second) = (b1.id, b2.id);
    if second < first {
        std::mem::swap(&mut first, &mut second);
    }
    let ids = |v: Vec<party::TaskInfo>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let list = |f: ListFilter| {
        let store = h.store.clone();
        async move { store.task_list(&f).await.unwrap() }
    };
    assert_eq!(
        ids(list(ListFilter::default()).await),
        vec![a.id, first, second, c.id]
    );
    // Claim one (running) so the state filter has something to tell apart.
    let running = h.claim_for(&["other"], &[], t0(), 1).await.remove(0);
    assert_eq!(running.id, b1.id);
    // A running task keeps its place in a listing of every state, page by page too.
    assert_eq!(
        ids(list(ListFilter::default()).await),
        vec![a.id, first, second, c.id]
    );
    let paged: Vec<TaskId> = one_page_each(&h)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(paged, vec![a.id, first, second, c.id]);
    assert_eq!(
        ids(list(ListFilter {
            state: Some(State::Scheduled),
            ..Default::default()
        })
        .await),
        vec![a.id, b2.id, c.id]
    );
    assert_eq!(
        ids(list(ListFilter {
            state: Some(State::Running),
            ..Default::default()
        })
        .await),
        vec![b1.id]
    );
    assert_eq!(
        ids(list(ListFilter {
            handler: Some("other".into()),
            ..Default::default()
        })
        .await),
        vec![b1.id]
    );
    assert_eq!(
        ids(list(ListFilter {
            state: Some(State::Running),
            handler: Some("noop".into()),
            ..Default::default()
        })
        .await),
        Vec::<TaskId>::new()
    );
    assert_eq!(
        ids(list(ListFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await),
        vec![a.id, first]
    );
    // Listings carry no run history, even for tasks that have one.
    h.finish(finish(&running, t0(), Next::Done)).await;
    let listed = list(ListFilter {
        state: Some(State::Done),
        ..Default::default()
    })
    .await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].runs.is_empty());
    assert_eq!(
        listed[0],
        party::TaskInfo {
            runs: Vec::new(),
            ..h.get(b1.id).await
        }
    );
    // Finished tasks of every state keep their places among the live ones, page by page too.
    let dead = h.claim_for(&["noop"], &[], t0(), 1).await.remove(0);
    assert_eq!(dead.id, a.id);
    h.finish(finish(&dead, t0(), Next::Dead)).await;
    h.store.task_cancel(c.id, t0()).await.unwrap();
    let paged = one_page_each(&h).await;
    let (b1_state, b2_state) = if first == b1.id {
        (State::Done, State::Scheduled)
    } else {
        (State::Scheduled, State::Done)
    };
    assert_eq!(
        paged,
        vec![
            (a.id, State::Dead),
            (first, b1_state),
            (second, b2_state),
            (c.id, State::Cancelled)
        ]
    );
}

async fn list_returns_a_hundred_unless_told_otherwise(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..105).map(|_| task("noop")).collect()).await;
    let all = h.store.task_list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 100);
    let more = h
        .store
        .task_list(&ListFilter {
            limit: Some(1_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(more.len(), 105);
}

async fn list_pages_after_a_cursor_and_filters_by_queue(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    // Seven tasks: three share a due time (the id orders them), one is in another queue.
    let mut tasks: Vec<InsertTask> = (0..3).map(|_| task_at("noop", t0())).collect();
    tasks.push(task_at("noop", t0() - secs(10)));
    tasks.push(task_at("noop", t0() + secs(10)));
    tasks.push(task_at("noop", t0() + secs(20)));
    tasks.push(InsertTask {
        queue: "mail".into(),
        ..task_at("noop", t0() + secs(5))
    });
    h.insert(tasks.clone()).await;
    let all = h.store.task_list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 7);
    // Page through three at a time: every task exactly once, in the listing's order.
    let ids = |v: &[TaskInfo]| v.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&page_through(&h, 3, 7).await), ids(&all));
    // A cursor in the middle of equal due times continues with the next id.
    let after_second = h
        .store
        .task_list(&ListFilter {
            cursor: Some(all[2].cursor()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&after_second), ids(&all[3..]));
    // The cursor survives its text form.
    let text = all[2].cursor().to_string();
    assert_eq!(text.parse::<party::ListCursor>().unwrap(), all[2].cursor());
    // Queue filter, alone and with a cursor.
    let mail = h
        .store
        .task_list(&ListFilter {
            queue: Some("mail".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&mail), vec![tasks[6].id]);
    let default_after = h
        .store
        .task_list(&ListFilter {
            queue: Some("default".into()),
            cursor: Some(all[4].cursor()),
            ..Default::default()
        })
        .await
        .unwrap();
    let expected: Vec<TaskId> = all[5..]
        .iter()
        .filter(|t| t.queue == "default")
        .map(|t| t.id)
        .collect();
    assert_eq!(ids(&default_after), expected);
    assert!(!expected.is_empty());
}

async fn next_due_is_the_earliest_waiting_task_of_the_given_handlers_and_queues(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let handlers = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let next = |hs: Vec<String>, qs: Vec<String>| {
        let store = h.store.clone();
        async move { store.task_next_due(&hs, &qs).await.unwrap() }
    };
    let noop = handlers(&["noop"]);
    let default = handlers(&["default"]);
    assert_eq!(
        next(noop.clone(), default.clone()).await,
        None,
        "nothing waits"
    );
    h.insert(vec![
        task_at("noop", t0() + secs(300)),
        task_at("noop", t0() + secs(100)),
        task_at("noop", t0() + secs(200)),
        task_at("other", t0() + secs(50)),
        InsertTask {
            queue: "mail".into(),
            ..task_at("noop", t0() + secs(10))
        },
    ])
    .await;
    assert_eq!(
        next(noop.clone(), default.clone()).await,
        Some(t0() + secs(100))
    );
    assert_eq!(
        next(handlers(&["noop", "other"]), default.clone()).await,
        Some(t0() + secs(50))
    );
    assert_eq!(
        next(noop.clone(), handlers(&["mail", "default"])).await,
        Some(t0() + secs(10))
    );
    assert_eq!(next(handlers(&["nobody"]), default.clone()).await, None);

    // Tasks already due: the earliest of them.
    h.insert(vec![
        task_at("noop", t0() - secs(5)),
        task_at("noop", t0() - secs(20)),
        task_at("noop", t0() - secs(10)),
    ])
    .await;
    assert_eq!(
        next(noop.clone(), default.clone()).await,
        Some(t0() - secs(20))
    );
    // Running, done, dead and cancelled tasks do not count; a retrying one does.
    let claimed = h.claim_for(&["noop"], &[], t0(), 3).await;
    assert_eq!(claimed.len(), 3);
    assert_eq!(
        next(noop.clone(), default.clone()).await,
        Some(t0() + secs(100))
    );
    h.finish(failed(
        &claimed[0],
        t0(),
        "boom",
        Next::retry_at(t0() + secs(60)),
    ))
    .await;
    h.finish(failed(&claimed[1], t0(), "boom", Next::Dead))
        .await;
    h.finish(finish(&claimed[2], t0(), Next::Done)).await;
    assert_eq!(
        next(noop.clone(), default.clone()).await,
        Some(t0() + secs(60))
    );
    h.store.task_cancel(claimed[0].id, t0()).await.unwrap();
    assert_eq!(next(noop, default).await, Some(t0() + secs(100)));
}

async fn stats_count_tasks_per_handler_and_state(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    assert_eq!(h.stats(t0()).await, StoreStats::default(), "an empty store");
    // Scheduled last: bringing a task into a state claims every due task of its handler.
    for state in [
        State::Running,
        State::Retrying,
        State::Done,
        State::Dead,
        State::Cancelled,
        State::Scheduled,
    ] {
        h.task_in(state, "noop").await;
    }
    h.insert(vec![
        task("other"),
        task("other"),
        task_at("other", t0() + secs(60)),
    ])
    .await;
    let stats = h.stats(t0()).await;
    let n = |handler: &str, state: State, count: u64| (handler.to_string(), state, count);
    assert_eq!(
        stats.counts,
        vec![
            n("noop", State::Cancelled, 1),
            n("noop", State::Dead, 1),
            n("noop", State::Done, 1),
            n("noop", State::Retrying, 1),
            n("noop", State::Running, 1),
            n("noop", State::Scheduled, 1),
            n("other", State::Scheduled, 3),
        ],
        "non-zero only, by handler, then state name"
    );
    // Due: scheduled or retrying, due at or before now (the retrying one is due at +600 s).
    assert_eq!(
        stats.due,
        vec![
            n("noop", State::Scheduled, 1),
            n("other", State::Scheduled, 2)
        ]
    );
    assert_eq!(
        h.stats(t0() + secs(600)).await.due,
        vec![
            n("noop", State::Retrying, 1),
            n("noop", State::Scheduled, 1),
            n("other", State::Scheduled, 3),
        ]
    );
}

async fn stats_report_the_oldest_due_task_and_recent_attempts(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![
        task_at("noop", t0() - secs(40)),
        task_at("noop", t0() - secs(90)),
        task_at("noop", t0() + secs(600)),
    ])
    .await;
    assert_eq!(h.stats(t0()).await.oldest_due, Some(t0() - secs(90)));
    assert_eq!(
        h.stats(t0() - secs(100)).await.oldest_due,
        None,
        "nothing is due yet then"
    );
    // Two attempts finish, 50 s apart.
    let claimed = h.claim(t0(), 2).await;
    h.finish(finish(&claimed[0], t0(), Next::Done)).await;
    h.finish(finish(&claimed[1], t0() + secs(50), Next::Done))
        .await;
    let finished = |since| {
        let store = h.store.clone();
        async move {
            store
                .stats(StatsParams {
                    now: t0() + secs(100),
                    finished_since: since,
                    stuck_limit: 10,
                })
                .await
                .unwrap()
                .finished_recently
        }
    };
    assert_eq!(finished(t0() - secs(1)).await, 2);
    assert_eq!(
        finished(t0()).await,
        1,
        "finished after the instant, not at it"
    );
    assert_eq!(finished(t0() + secs(50)).await, 0);
}

async fn stats_name_running_tasks_whose_lease_ended(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..4).map(|_| task("noop")).collect()).await;
    let first = h.claim(t0(), 3).await;
    let later = h.claim(t0() + secs(10), 1).await.remove(0);
    let stats = h.stats(t0() + secs(30)).await;
    assert_eq!(
        (stats.stuck_count, stats.stuck.len()),
        (0, 0),
        "no lease ended before +30 s"
    );
    let stats = h
        .store
        .stats(StatsParams {
            now: t0() + secs(31),
            finished_since: t0(),
            stuck_limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(stats.stuck_count, 3, "every one counted");
    assert_eq!(stats.stuck.len(), 2, "the first stuck_limit named");
    assert!(
        stats
            .stuck
            .iter()
            .all(|t| first.iter().any(|c| c.id == t.id))
    );
    let stats = h.stats(t0() + secs(41)).await;
    assert_eq!(stats.stuck_count, 4);
    assert_eq!(
        stats.stuck.last().map(|t| t.id),
        Some(later.id),
        "earliest expiry first"
    );
}

/// A data field filter matches a string by its text, a number as stored and a boolean as
/// `true`/`false`, on live and finished tasks alike; null, objects, arrays, other fields and
/// other values do not match.
async fn list_filters_by_a_data_field(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let with = |data: &str| InsertTask {
        data: data.to_string(),
        ..task("bill")
    };
    let rows = [
        r#"{"customer":"acme"}"#,
        r#"{"customer":"acme","n":42}"#,
        r#"{"customer":"acme corp"}"#,
        r#"{"customer":"Acme"}"#,
        r#"{"customer":null}"#,
        r#"{"customer":["acme"]}"#,
        r#"{"customer":{"name":"acme"}}"#,
        r#"{"n":2.5,"ok":true}"#,
        r#"{"name":"acme","x":"a\"b"}"#,
        r#"{"customer":"äcme ✓"}"#,
    ];
    let ids = h.insert(rows.iter().map(|d| with(d)).collect()).await;
    // The second one finishes: finished tasks are filtered too.
    let c = h.claim_for(&["bill"], &[], t0(), 1).await.remove(0);
    assert_eq!(c.id, ids[0]);
    h.finish(finish(&c, t0(), Next::Done)).await;
    let matching = |filter: &str| {
        let store = h.store.clone();
        let m = party::validate::data_match(filter).unwrap();
        async move {
            let mut got: Vec<TaskId> = store
                .task_list(&ListFilter {
                    data: Some(m),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<TaskId>| {
        v.sort();
        v
    };
    assert_eq!(
        matching("customer=acme").await,
        sorted(vec![ids[0], ids[1]])
    );
    assert_eq!(matching("customer=acme corp").await, vec![ids[2]]);
    assert_eq!(matching("n=42").await, vec![ids[1]]);
    assert_eq!(matching("n=2.5").await, vec![ids[7]]);
    assert_eq!(matching("ok=true").await, vec![ids[7]]);
    assert_eq!(matching("x=a\"b").await, vec![ids[8]]);
    assert_eq!(matching("customer=äcme ✓").await, vec![ids[9]]);
    for nothing in [
        "customer=null",
        "customer=ACME",
        "customer=",
        "ok=1",
        "name=acme corp",
    ] {
        assert_eq!(matching(nothing).await, Vec::<TaskId>::new(), "{nothing}");
    }
    // With the other filters and the state.
    let done = h
        .store
        .task_list(&ListFilter {
            state: Some(State::Done),
            data: Some(party::validate::data_match("customer=acme").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[0]]);
}

/// `recurring` keeps only recurring tasks or only one-off tasks, with the state filter.
async fn list_filters_recurring_and_one_off_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let once = h.insert(vec![task("noop")]).await[0];
    let every = h
        .insert(vec![crate::harness::recurring("tick", r#"{"n":1}"#)])
        .await[0];
    let list = |recurring: Option<bool>, state: Option<State>| {
        let store = h.store.clone();
        async move {
            store
                .task_list(&ListFilter {
                    recurring,
                    state,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some(true), None).await, vec![every]);
    assert_eq!(list(Some(false), None).await, vec![once]);
    assert_eq!(list(Some(true), Some(State::Scheduled)).await, vec![every]);
    assert_eq!(
        list(Some(true), Some(State::Running)).await,
        Vec::<TaskId>::new()
    );
    assert_eq!(list(None, None).await.len(), 2);
}

/// `task_list_reach` finds the n-th task of a listing (live and finished alike, the data filter
/// left out) and `until` ends a listing there, with or without a cursor and a data filter.
async fn list_reach_and_until_bound_a_listing(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let with = |i: i64| InsertTask {
        data: format!(r#"{{"even":{}}}"#, i % 2 == 0),
        ..task_at("noop", t0() + secs(i))
    };
    let ids = h.insert((0..6).map(with).collect()).await;
    // The first two finish: the listing crosses from the history into the live tasks.
    for want in &ids[..2] {
        let c = h
            .claim_for(&["noop"], &[], t0() + secs(10), 1)
            .await
            .remove(0);
        assert_eq!(c.id, *want);
        h.finish(finish(&c, t0() + secs(10), Next::Done)).await;
    }
    let all = h.store.task_list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    let reach = |f: ListFilter, n: u32| {
        let store = h.store.clone();
        async move { store.task_list_reach(&f, n).await.unwrap() }
    };
    assert_eq!(reach(ListFilter::default(), 1).await, Some(all[0].cursor()));
    assert_eq!(reach(ListFilter::default(), 3).await, Some(all[2].cursor()));
    assert_eq!(reach(ListFilter::default(), 6).await, Some(all[5].cursor()));
    assert_eq!(reach(ListFilter::default(), 7).await, None);
    // After a cursor, the n-th from there.
    let after_two = ListFilter {
        cursor: Some(all[1].cursor()),
        ..Default::default()
    };
    assert_eq!(reach(after_two.clone(), 2).await, Some(all[3].cursor()));
    // The data filter does not narrow the reach (it bounds the tasks a filter examines);
    // the state filter does.
    let odd = party::validate::data_match("even=false").unwrap();
    let with_data = ListFilter {
        data: Some(odd.clone()),
        ..Default::default()
    };
    assert_eq!(reach(with_data.clone(), 3).await, Some(all[2].cursor()));
    let done = ListFilter {
        state: Some(State::Done),
        ..Default::default()
    };
    assert_eq!(reach(done.clone(), 2).await, Some(all[1].cursor()));
    assert_eq!(reach(done, 3).await, None);

    let list = |f: ListFilter| {
        let store = h.store.clone();
        async move {
            store
                .task_list(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    // `until` is inclusive and holds on both sides of the listing.
    let until = |f: ListFilter, i: usize| ListFilter {
        until: Some(all[i].cursor()),
        ..f
    };
    assert_eq!(list(until(ListFilter::default(), 0)).await, ids[..1]);
    assert_eq!(list(until(ListFilter::default(), 3)).await, ids[..4]);
    assert_eq!(list(until(after_two, 4)).await, ids[2..5]);
    // With the data filter: the odd ones up to the fourth task.
    assert_eq!(
        list(until(with_data.clone(), 3)).await,
        vec![ids[1], ids[3]]
    );
    assert_eq!(list(with_data).await, vec![ids[1], ids[3], ids[5]]);
    // With a state: the state's own statement bounds the same way.
    let scheduled = ListFilter {
        state: Some(State::Scheduled),
        ..Default::default()
    };
    assert_eq!(list(until(scheduled.clone(), 4)).await, ids[2..5]);
    assert_eq!(reach(scheduled, 4).await, Some(all[5].cursor()));
}

/// A task moving between the live table and the history (cancelled, retried, cancelled
/// again, by another process) is always found, with its state read in one snapshot: a read of
/// one table after the other could miss a task that moved from the second to the first
/// between the two.
async fn get_finds_a_task_while_it_moves_between_live_and_history(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task_at("noop", t0() + secs(3600))]).await[0];
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (h.store.clone(), done.clone());
        tokio::spawn(async move {
            let (mut reads, mut missed) = (0u32, 0u32);
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 100 {
                match store.task_get(id).await.expect("get") {
                    Some(t) => assert!(
                        matches!(t.state, State::Scheduled | State::Cancelled),
                        "{:?}",
                        t.state
                    ),
                    None => missed += 1,
                }
                reads += 1;
            }
            (reads, missed)
        })
    };
    let mover = h.reopen().await.expect("a second store opens");
    for _ in 0..200 {
        mover.task_cancel(id, t0()).await.expect("cancel");
        mover.task_retry(id, t0()).await.expect("retry");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, missed) = reader.await.unwrap();
    assert_eq!(
        missed, 0,
        "{missed} of {reads} reads missed the moving task"
    );
}

/// `stats` answers with figures of one moment: its stuck count and its list of stuck tasks,
/// its live counts and its due counts, agree with each other while another process claims a
/// task (its lease long over by the reader's clock) and releases it as a retry, again and
/// again.
async fn stats_figures_agree_while_a_task_is_claimed_and_released(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    // Control: at rest, in each state the mover leaves it in, the figures agree.
    let at = t0() + secs(3600);
    assert_eq!(torn_stats(&h.stats(at).await), Vec::<String>::new());
    let c = h.claim_one("noop", t0()).await;
    assert_eq!(torn_stats(&h.stats(at).await), Vec::<String>::new());
    assert_eq!(h.stats(at).await.stuck_count, 1);
    h.finish(failed(&c, t0(), "boom", Next::retry_at(t0())))
        .await;
    assert_eq!(torn_stats(&h.stats(at).await), Vec::<String>::new());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (h.store.clone(), done.clone());
        tokio::spawn(async move {
            let now = t0() + secs(3600);
            let (mut reads, mut torn, mut bad) = (0u32, Vec::new(), 0u32);
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 100 {
                let s = store
                    .stats(party::store::StatsParams {
                        now,
                        finished_since: now - party::policy::THROUGHPUT_WINDOW,
                        stuck_limit: party::policy::STUCK_LISTED,
                    })
                    .await
                    .expect("stats");
                reads += 1;
                let t = torn_stats(&s);
                bad += u32::from(!t.is_empty());
                torn.extend(t);
            }
            (reads, torn, bad)
        })
    };
    let mover = h.reopen().await.expect("a second store opens");
    for _ in 0..300 {
        let c = claim_on(mover.as_ref(), &[], &[], t0(), 10).await;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].id, id);
        let results = mover
            .task_finish(vec![failed(&c[0], t0(), "boom", Next::retry_at(t0()))])
            .await
            .unwrap();
        assert_eq!(results, vec![party::store::FinishResult::Applied]);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, torn, bad) = reader.await.unwrap();
    assert!(
        torn.is_empty(),
        "{bad} of {reads} stats disagreed with themselves, e.g. {:?}",
        &torn[..torn.len().min(5)]
    );
}

/// What in one `stats` answer contradicts another figure of it (one task lives in the store).
fn torn_stats(s: &party::store::StoreStats) -> Vec<String> {
    let mut torn = Vec::new();
    let count = |st: State| {
        s.counts
            .iter()
            .filter(|c| c.1 == st)
            .map(|c| c.2)
            .sum::<u64>()
    };
    let due: u64 = s.due.iter().map(|c| c.2).sum();
    let listed = s.stuck.len() as u64;
    if listed != s.stuck_count.min(u64::from(party::policy::STUCK_LISTED)) {
        torn.push(format!("stuck_count {} but {listed} listed", s.stuck_count));
    }
    if count(State::Running) < s.stuck_count {
        torn.push(format!(
            "{} running but {} stuck",
            count(State::Running),
            s.stuck_count
        ));
    }
    let waiting = count(State::Retrying) + count(State::Scheduled);
    if waiting < due {
        torn.push(format!("{waiting} waiting but {due} due"));
    }
    if count(State::Running) + waiting != 1 {
        torn.push(format!("live counts {:?}", s.counts));
    }
    if s.oldest_due.is_some() == s.due.is_empty() {
        torn.push(format!("oldest due {:?} but due {:?}", s.oldest_due, s.due));
    }
    torn
}

/// A cursor is text a caller hands back (`?cursor=` of the HTTP API), read
/// by `ListCursor::from_str`, which takes any instant jiff can hold: one before the year 1
/// lists from the first task, as any place before every task does. PostgreSQL's `timestamptz`
/// starts in 4713 BC, so such a cursor sent as is fails the listing there with a store error
/// ("timestamp out of range") instead.
async fn a_cursor_before_every_task_lists_from_the_first(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let cursor: party::ListCursor = format!("-300000000000000000_{id}")
        .parse()
        .expect("the cursor's text is accepted");
    let listed = h
        .store
        .task_list(&ListFilter {
            cursor: Some(cursor),
            ..ListFilter::default()
        })
        .await
        .unwrap_or_else(|e| panic!("a listing after {cursor} failed: {e}"));
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);
}

on_every_backend!(
    successes_read_the_latest_runs_of_live_and_finished_tasks,
    a_cursor_before_every_task_lists_from_the_first,
    stats_figures_agree_while_a_task_is_claimed_and_released,
    get_finds_a_task_while_it_moves_between_live_and_history,
    list_reach_and_until_bound_a_listing,
    list_filters_recurring_and_one_off_tasks,
    list_filters_by_a_data_field,
    get_answers_none_for_an_unknown_id,
    list_orders_by_due_time_then_id_and_filters,
    list_returns_a_hundred_unless_told_otherwise,
    list_pages_after_a_cursor_and_filters_by_queue,
    next_due_is_the_earliest_waiting_task_of_the_given_handlers_and_queues,
    stats_count_tasks_per_handler_and_state,
    stats_report_the_oldest_due_task_and_recent_attempts,
    stats_name_running_tasks_whose_lease_ended,
);
