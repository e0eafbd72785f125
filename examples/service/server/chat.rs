//! `POST /chat/{session}` appends through the `TranscriptStore` (the file is the
//! record, Redis its cache); `GET /chat/{session}` reads the history back, from the
//! file when Redis is not serving, and says so.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};
use stayfast::transcripts::{Durability, Message};

use super::{Shared, failure::ApiError};

#[derive(Debug, Deserialize)]
pub(crate) struct NewMessage {
    role: String,
    content: String,
    /// A client id makes the append idempotent: a retried POST is stored once.
    id: Option<String>,
}

/// The receipt: the record's seq and id, and how durable it was when we answered.
pub(crate) async fn append(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    Json(body): Json<NewMessage>,
) -> Result<Json<Value>, ApiError> {
    let mut message = Message::new(body.role, body.content);
    if let Some(id) = body.id {
        message = message.with_id(id);
    }
    let receipt = shared.app.transcripts().append(&session, message).await?;
    let durability = match receipt.durability {
        Durability::Synced => "synced",
        Durability::Written => "written",
        _ => "unknown",
    };
    Ok(Json(json!({
        "seq": receipt.record.seq,
        "id": receipt.record.id,
        "at": receipt.record.at,
        "durability": durability,
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<usize>,
}

/// 200 even while Redis is down: the history then comes from the file, with
/// `degraded: true` and the reason.
pub(crate) async fn history(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    Query(query): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).min(1000);
    let history = shared.app.transcripts().history(&session, limit).await?;
    Ok(Json(json!({
        "source": history.source.as_str(),
        "degraded": history.degraded,
        "reason": history.reason.map(|r| format!("{r:?}")),
        "messages": history.records,
    })))
}
