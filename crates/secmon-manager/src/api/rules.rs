//! `GET /api/rules` (the loaded Sigma rules with hit counts, and what could not
//! be loaded) and `GET /api/rules/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use chrono::{DateTime, Utc};
use secmon_rules::{LoadProblem, RuleStat};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiContext;
use super::error::{ApiError, ErrorBody, echo};
use super::params::{self, NoParams};

/// A loaded rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleInfo {
    /// The rule's id (its title when it has none); alerts carry it as `rule_id`.
    pub id: String,
    pub title: String,
    /// Sigma level (`informational` .. `critical`), if set.
    pub level: Option<String>,
    /// The file it was loaded from.
    pub file: String,
    /// A correlation rule (`event_count`, `value_count`, ...) rather than a detection.
    pub correlation: bool,
    /// Matches since the manager started (kept across reloads).
    pub hits: u64,
}

impl From<RuleStat> for RuleInfo {
    fn from(s: RuleStat) -> Self {
        Self {
            id: s.rule_id,
            title: s.title,
            level: s.level,
            file: s.file.display().to_string(),
            correlation: s.correlation,
            hits: s.hits,
        }
    }
}

/// A rule, file or directory that could not be loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleProblem {
    pub file: String,
    /// The rule's id or title, when the problem is with one rule of the file.
    pub rule: Option<String>,
    pub reason: String,
}

impl From<&LoadProblem> for RuleProblem {
    fn from(p: &LoadProblem) -> Self {
        Self { file: p.file.display().to_string(), rule: p.rule.clone(), reason: p.reason.clone() }
    }
}

/// The rule set in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesAnswer {
    /// `[rules] dirs`.
    pub dirs: Vec<String>,
    /// When this set was loaded (start, SIGHUP or a rule file change).
    pub loaded_at: DateTime<Utc>,
    pub rules: Vec<RuleInfo>,
    pub problems: Vec<RuleProblem>,
}

/// The loaded rules with hit counts, and the load problems.
#[utoipa::path(
    get, path = "/api/rules", tag = "rules",
    responses(
        (status = 200, description = "The rule set in use", body = RulesAnswer),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    )
)]
pub async fn list_rules(State(ctx): State<Arc<ApiContext>>, uri: Uri) -> Result<Json<RulesAnswer>, ApiError> {
    let _: NoParams = params::query(&uri)?;
    let loaded = ctx.rules.current();
    Ok(Json(RulesAnswer {
        dirs: ctx.rules.dirs().iter().map(|d| d.display().to_string()).collect(),
        loaded_at: loaded.loaded_at,
        rules: loaded.stats().into_iter().map(RuleInfo::from).collect(),
        problems: loaded.problems.iter().map(RuleProblem::from).collect(),
    }))
}

/// One loaded rule.
#[utoipa::path(
    get, path = "/api/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule id (or title, for a rule without id)")),
    responses(
        (status = 200, description = "The rule", body = RuleInfo),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "No loaded rule with this id", body = ErrorBody),
    )
)]
pub async fn get_rule(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<RuleInfo>, ApiError> {
    let id = match path {
        Ok(Path(id)) => id,
        Err(e) => return Err(ApiError::bad_parameter("id", e.body_text())),
    };
    let _: NoParams = params::query(&uri)?;
    ctx.rules
        .current()
        .stats()
        .into_iter()
        .find(|s| s.rule_id == id)
        .map(|s| Json(s.into()))
        .ok_or_else(|| ApiError::not_found(format!("no loaded rule with id {}", echo(&id))))
}
