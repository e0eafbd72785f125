//! `POST /facts` and `GET /facts/search?q=` over the `KnowledgeStore`. Facts live in
//! Redis only: while it is down these answer 504 (a timeout) and then, once the breaker
//! has opened, 503 with `Retry-After`, at once. The search route also runs under a
//! policy of its own, a deadline and a bulkhead (see `route_policy`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use stayfast::KnowledgeStore;

use super::{Shared, failure::ApiError};

fn knowledge(shared: &Shared) -> Result<&KnowledgeStore, ApiError> {
    shared.app.knowledge().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "facts need Redis, and this instance runs without it",
        )
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewFact {
    content: String,
    #[serde(default)]
    metadata: Value,
}

pub(crate) async fn store(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<NewFact>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = knowledge(&shared)?
        .store_fact(body.content, body.metadata)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Search {
    q: String,
    limit: Option<usize>,
}

pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Search>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(10).min(100);
    let facts = knowledge(&shared)?.search(&query.q, limit).await?;
    Ok(Json(json!({ "facts": facts })))
}
