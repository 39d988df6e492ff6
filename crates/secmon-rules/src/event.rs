//! [`MappedEvent`] as an rsigma event: fields resolve through the JSON document (so
//! dotted native paths like `payload.path` work), keywords search only the mapped
//! keyword strings (a log line's message, not every path and id in the envelope).

use std::borrow::Cow;

use rsigma_eval::event::{Event, EventValue, JsonEvent};
use serde_json::Value;

use crate::mapping::MappedEvent;

pub(crate) struct SigmaView<'a> {
    json: JsonEvent<'a>,
    mapped: &'a MappedEvent,
}

impl<'a> SigmaView<'a> {
    pub(crate) fn new(mapped: &'a MappedEvent) -> Self {
        Self { json: JsonEvent::borrow(&mapped.doc), mapped }
    }
}

impl Event for SigmaView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.json.get_field(path)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.mapped.keywords.iter().any(|s| pred(s))
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.mapped.keywords.iter().map(|s| Cow::Borrowed(s.as_str())).collect()
    }

    fn to_json(&self) -> Value {
        self.mapped.doc.clone()
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        self.json.top_level_keys()
    }
}
