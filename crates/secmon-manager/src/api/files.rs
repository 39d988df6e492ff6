//! `GET /api/agents/{id}/files`: the last known state of an agent's watched files.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use secmon_proto::AgentId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiContext;
use super::agents::{path_id, unknown_agent};
use super::error::{ApiError, ErrorBody, echo};
use super::params;
use crate::store::{FileQuery, FileStateRecord, Page};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileParams {
    /// Exact path: answer this file's state (deleted or not) instead of a list.
    /// Cannot be combined with the list parameters.
    #[param(example = "/etc/passwd")]
    path: Option<String>,
    /// List only paths that start with this text (no wildcards), e.g. `/etc/`.
    #[param(example = "/etc/")]
    prefix: Option<String>,
    /// `true` to list deleted and renamed-away paths too (default `false`).
    #[param(value_type = Option<bool>)]
    include_deleted: Option<String>,
    /// Rows to skip (at most 1000000).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Rows to return (default 50, at most 1000).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// One file's state (with `path`), or one page of them ordered by path.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FilesAnswer {
    One(Box<FileStateRecord>),
    List(Page<FileStateRecord>),
}

/// The last known state of an agent's watched files: with `path`, that file's; without,
/// a page of them ordered by path (deleted ones only with `include_deleted=true`).
#[utoipa::path(
    get, path = "/api/agents/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Agent id"), FileParams),
    responses(
        (status = 200, description = "With `path`: that file's state. Otherwise one page of file states.",
            body = FilesAnswer),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown agent, or no state for `path`", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn agent_files(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<FilesAnswer>, ApiError> {
    let id = path_id(path)?;
    let p: FileParams = params::query(&uri)?;
    if let Some(raw) = p.path {
        for (name, given) in [
            ("prefix", p.prefix.is_some()),
            ("include_deleted", p.include_deleted.is_some()),
            ("offset", p.offset.is_some()),
            ("limit", p.limit.is_some()),
        ] {
            if given {
                return Err(ApiError::bad_parameter(
                    name,
                    "cannot be combined with path (path answers one file, deleted or not)",
                ));
            }
        }
        let Some(file) = params::file_path("path", Some(raw))? else {
            return Err(ApiError::bad_parameter("path", "must not be empty"));
        };
        return match ctx.store.get_file_state(&id, &file).await? {
            Some(state) => Ok(Json(FilesAnswer::One(Box::new(state)))),
            None if known(&ctx, &id).await? => Err(ApiError::not_found(format!(
                "agent {} has no recorded state for path {}",
                echo(id.as_str()),
                echo(&file)
            ))),
            None => Err(unknown_agent(&id)),
        };
    }
    let (offset, limit) = params::paging(p.offset.as_deref(), p.limit.as_deref())?;
    let q = FileQuery {
        agent: id.clone(),
        prefix: params::file_path("prefix", p.prefix)?,
        include_deleted: params::flag("include_deleted", p.include_deleted.as_deref())?.unwrap_or(false),
        offset,
        limit,
    };
    let page = ctx.store.list_file_states(&q).await?;
    if page.total == 0 && !known(&ctx, &id).await? {
        return Err(unknown_agent(&id));
    }
    Ok(Json(FilesAnswer::List(page)))
}

/// An agent the manager knows: registered, or with file states (events may come
/// before a registration).
async fn known(ctx: &ApiContext, id: &AgentId) -> Result<bool, ApiError> {
    Ok(ctx.registry.get(id).is_some()
        || ctx.store.get_agent(id).await?.is_some()
        || ctx.store.has_file_states(id).await?)
}
