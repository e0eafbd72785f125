//! E3, hostile text and sizes: NUL, CRLF, emoji, RTL and combining characters round-trip
//! byte-exact; a message at the size cap is accepted, one byte over is rejected before
//! any I/O.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_size() {
    const MAX: usize = 4096;
    let server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.max_message_bytes = MAX;
    })
    .await;
    let texts = [
        "nul\0inside\0\0",
        "crlf\r\nand lone \r and \n",
        "line sep\u{2028}para sep\u{2029}",
        "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 😀",
        "RTL \u{202E}olleh\u{202C} עברית العربية",
        "combining e\u{301} a\u{30A}\u{323} Z\u{336}\u{337}",
        "quotes \" \\ / \u{7f} \u{1} \t",
        "",
    ];
    let mut sent = Vec::new();
    for t in texts {
        sent.push(
            store
                .append("text", Message::new("user", t))
                .await
                .unwrap()
                .record,
        );
    }
    // Exactly the cap: accepted, even when JSON escaping makes its line 6x longer.
    let at_cap_nul = "\0".repeat(MAX);
    let mut at_cap_multibyte = "é".repeat(MAX / 2);
    assert_eq!(at_cap_multibyte.len(), MAX);
    sent.push(
        store
            .append("text", Message::new("user", at_cap_nul.as_str()))
            .await
            .unwrap()
            .record,
    );
    sent.push(
        store
            .append("text", Message::new("user", at_cap_multibyte.as_str()))
            .await
            .unwrap()
            .record,
    );

    let (h, _) = until_redis(&store, "text", sent.len()).await;
    for (got, want) in h.records.iter().zip(&sent) {
        assert_eq!(got.content.as_bytes(), want.content.as_bytes(), "via Redis");
    }
    assert_eq!(h.records, sent);
    // Via the file: a file-only store over the same directory.
    let (file_store, _bg) = open(&tmp.tx(), None, |c| c.max_message_bytes = MAX).await;
    let h = file_store.history("text", 100).await.unwrap();
    assert_eq!(h.source, HistorySource::File);
    for (got, want) in h.records.iter().zip(&sent) {
        assert_eq!(got.content.as_bytes(), want.content.as_bytes(), "via the file");
    }
    assert_eq!(h.records, sent);
    let raw = std::fs::read(file_of(&tmp.tx(), "text")).unwrap();
    assert_eq!(
        raw.iter().filter(|b| **b == b'\n').count(),
        sent.len(),
        "one line per record"
    );

    // Message ids as hostile as the texts: each push still chains onto its predecessor
    // (compared byte-exact inside Lua: one push at a time) — one script per append, no
    // repopulation.
    settle(&bg).await;
    let evals = server.script_runs().await.unwrap();
    for id in ["id\0nul", "id \"quoted\" \\ \u{2028}", "id 👩‍👩‍👧 e\u{301}"] {
        sent.push(
            store
                .append("text", Message::new("user", id).with_id(id))
                .await
                .unwrap()
                .record,
        );
        settle(&bg).await;
    }
    assert_eq!(
        server.script_runs().await.unwrap() - evals,
        3,
        "a push fell back to repopulation"
    );
    assert_eq!(window(&server, "text").await, sent);
    let (h, _) = until_redis(&store, "text", sent.len()).await;
    assert_eq!(h.records, sent);

    // Cap + 1: refused before any I/O.
    at_cap_multibyte.push('x');
    let before: Vec<_> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = store
        .append("too-large", Message::new("user", at_cap_multibyte))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { len, max, .. } if len == MAX + 1 && max == MAX),
        "{err}"
    );
    assert!(err.is_bad_input());
    assert!(!file_of(&tmp.tx(), "too-large").exists(), "no file created");
    let after: Vec<_> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
    settle(&bg).await;
    assert!(!exists(&server, &key_of("too-large")).await);
    eprintln!(
        "E3: {} texts round-tripped byte-exact via Redis and via the file; cap {MAX} accepted, {} refused: {err}",
        sent.len(),
        MAX + 1
    );
}
