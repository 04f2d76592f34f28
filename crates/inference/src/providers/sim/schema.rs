//! A value that fits a JSON Schema, drawn from a [`Source`]: what a simulated model answers to
//! `response_format: {"type": "json_schema", ...}` and what it passes as a tool's arguments.
//!
//! It covers what structured-output schemas use (OpenAI's strict subset, Pydantic's and Zod's
//! output): `type` (one or a list), `properties`/`required`/`additionalProperties`/
//! `minProperties`, `items`/`prefixItems`/`minItems`/`maxItems`/`uniqueItems`, `enum`, `const`,
//! `anyOf`/`oneOf`/`allOf`, `$ref` into the same document (`$defs`, `definitions`, recursion
//! included), number bounds (inclusive and exclusive, draft 4's boolean form too) and
//! `multipleOf`, string lengths, `pattern` (through `rand_regex`) and the common `format`s.
//! Every value is checked against the schema with `jsonschema` before it is answered; a schema
//! the generator cannot satisfy is refused with a message that says why, never answered with a
//! value that does not fit.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Map, Number, Value};

use super::source::Source;
use super::text::{fit_length, pattern_generator, percent_decode};

/// Past this depth a recursive schema takes its shortest way out (no optional properties, the
/// fewest items, a branch without `$ref`).
const SHALLOW: usize = 4;
/// Past this depth the schema is refused as unbounded.
const DEEPEST: usize = 48;
/// The most values one answer generates.
const MOST_NODES: usize = 20_000;
/// The most items one array gets.
const MOST_ITEMS: u64 = 1_000;
/// The longest string generated.
const LONGEST: u64 = 4_096;

/// A value for `schema`, or why none was made.
pub fn generate(schema: &Value, source: &mut Source) -> Result<Value, String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the JSON schema is not valid: {e}"))?;
    let mut last = String::new();
    // A draw can miss (a `oneOf` whose branches overlap, a `uniqueItems` collision): try again.
    for _ in 0..4 {
        let mut generator = Generator {
            root: schema,
            source: &mut *source,
            nodes: 0,
        };
        let value = generator.value(schema, 0)?;
        match validator.validate(&value) {
            Ok(()) => return Ok(value),
            Err(error) => last = error.to_string(),
        }
    }
    Err(format!(
        "the simulator made no value that fits this schema: {last}"
    ))
}

/// Whether `value` fits `schema` (a schema that does not compile fits nothing).
pub fn fits(schema: &Value, value: &Value) -> bool {
    jsonschema::validator_for(schema).is_ok_and(|v| v.is_valid(value))
}

struct Generator<'a> {
    root: &'a Value,
    source: &'a mut Source,
    nodes: usize,
}

impl<'a> Generator<'a> {
    fn value(&mut self, schema: &Value, depth: usize) -> Result<Value, String> {
        self.nodes += 1;
        if self.nodes > MOST_NODES {
            return Err(format!("the schema asks for more than {MOST_NODES} values"));
        }
        if depth > DEEPEST {
            return Err(format!(
                "the schema nests deeper than {DEEPEST} levels (a recursion with no way out?)"
            ));
        }
        let map = match schema {
            Value::Bool(true) => return Ok(Value::String(self.source.word())),
            Value::Bool(false) => return Err("the schema `false` admits no value".into()),
            Value::Object(map) => map,
            _ => return Err("a schema must be an object or a boolean".into()),
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            let target = self.resolve(reference)?;
            return self.value(target, depth + 1);
        }
        if let Some(value) = map.get("const") {
            return Ok(value.clone());
        }
        if let Some(options) = map.get("enum").and_then(Value::as_array) {
            if options.is_empty() {
                return Err("an empty `enum` admits no value".into());
            }
            return Ok(self.pick(options).clone());
        }
        if let Some(all) = map.get("allOf").and_then(Value::as_array) {
            let merged = self.merge(map, all)?;
            return self.value(&Value::Object(merged), depth + 1);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = map.get(key).and_then(Value::as_array) {
                let branch = self.branch(branches, depth)?;
                // Keywords beside the branches (a shared `type`, say) still apply.
                let mut combined = map.clone();
                combined.remove(key);
                if let Value::Object(chosen) = branch {
                    combined.extend(chosen.clone());
                } else if branch == &Value::Bool(false) {
                    return Err(format!("every `{key}` branch is `false`"));
                }
                return self.value(&Value::Object(combined), depth + 1);
            }
        }
        match self.kind(map).as_str() {
            "object" => self.object(map, depth),
            "array" => self.array(map, depth),
            "integer" => self.number(map, true),
            "number" => self.number(map, false),
            "boolean" => Ok(Value::Bool(self.source.chance(0.5))),
            "null" => Ok(Value::Null),
            "string" => self.string(map),
            other => Err(format!("unknown type {other:?}")),
        }
    }

    fn pick<'v>(&mut self, options: &'v [Value]) -> &'v Value {
        &options[usize::try_from(self.source.below(options.len() as u64)).unwrap_or(0)]
    }

    /// The schema a `$ref` points at, within this document.
    fn resolve(&self, reference: &str) -> Result<&'a Value, String> {
        let pointer = reference.strip_prefix('#').ok_or_else(|| {
            format!("$ref {reference:?} points outside the schema; only \"#…\" is followed")
        })?;
        let pointer = percent_decode(pointer);
        let root: &'a Value = self.root;
        root.pointer(&pointer)
            .ok_or_else(|| format!("$ref {reference:?} points at nothing"))
    }

    /// `allOf`'s schemas and the keywords beside them as one schema: properties merged,
    /// `required` joined, the other keywords of later schemas winning.
    fn merge(
        &self,
        outer: &Map<String, Value>,
        all: &[Value],
    ) -> Result<Map<String, Value>, String> {
        let mut merged = outer.clone();
        merged.remove("allOf");
        for part in all {
            let mut part = part;
            while let Some(reference) = part.get("$ref").and_then(Value::as_str) {
                part = self.resolve(reference)?;
            }
            let Value::Object(part) = part else {
                if part == &Value::Bool(false) {
                    return Err("an `allOf` holds `false`".into());
                }
                continue;
            };
            for (key, value) in part {
                match (key.as_str(), merged.get_mut(key)) {
                    ("properties", Some(Value::Object(mine))) => {
                        if let Value::Object(theirs) = value {
                            mine.extend(theirs.clone());
                        }
                    }
                    ("required", Some(Value::Array(mine))) => {
                        if let Value::Array(theirs) = value {
                            mine.extend(
                                theirs
                                    .iter()
                                    .filter(|v| !mine.contains(v))
                                    .cloned()
                                    .collect::<Vec<_>>(),
                            );
                        }
                    }
                    _ => {
                        merged.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        Ok(merged)
    }

    /// One of `branches`; deep in a recursion, one that does not recurse when there is one.
    fn branch<'v>(&mut self, branches: &'v [Value], depth: usize) -> Result<&'v Value, String> {
        if branches.is_empty() {
            return Err("an empty `anyOf`/`oneOf` admits no value".into());
        }
        if depth >= SHALLOW {
            let flat: Vec<&Value> = branches
                .iter()
                .filter(|b| !b.to_string().contains("\"$ref\""))
                .collect();
            if !flat.is_empty() {
                let at = usize::try_from(self.source.below(flat.len() as u64)).unwrap_or(0);
                return Ok(flat[at]);
            }
        }
        // `null` is one choice among the others, but a rarer one: an optional field is mostly
        // filled.
        let filled: Vec<&Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&Value::from("null")))
            .collect();
        if filled.len() < branches.len() && !filled.is_empty() && self.source.chance(0.8) {
            let at = usize::try_from(self.source.below(filled.len() as u64)).unwrap_or(0);
            return Ok(filled[at]);
        }
        Ok(self.pick(branches))
    }

    /// The type to generate: the one named, a non-null one of a list (null now and then), or
    /// the one the keywords imply.
    fn kind(&mut self, map: &Map<String, Value>) -> String {
        match map.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(Value::Array(kinds)) => {
                let names: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
                let filled: Vec<&str> = names.iter().copied().filter(|k| *k != "null").collect();
                if filled.is_empty() || (filled.len() < names.len() && self.source.chance(0.2)) {
                    return "null".into();
                }
                filled[usize::try_from(self.source.below(filled.len() as u64)).unwrap_or(0)].into()
            }
            _ => {
                let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
                if has(&[
                    "properties",
                    "required",
                    "additionalProperties",
                    "minProperties",
                ]) {
                    "object".into()
                } else if has(&["items", "prefixItems", "minItems", "maxItems"]) {
                    "array".into()
                } else if has(&[
                    "minimum",
                    "maximum",
                    "exclusiveMinimum",
                    "exclusiveMaximum",
                    "multipleOf",
                ]) {
                    "number".into()
                } else {
                    "string".into()
                }
            }
        }
    }

    fn object(&mut self, map: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let empty = Map::new();
        let properties = map
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fewest = count(map, "minProperties").unwrap_or(0);
        let mut out = Map::new();
        for (name, schema) in properties {
            let wanted = required.contains(&name.as_str())
                || (depth < SHALLOW && self.source.chance(0.75))
                || (out.len() as u64) < fewest;
            if wanted {
                out.insert(name.clone(), self.value(schema, depth + 1)?);
            }
        }
        // Required names with no schema of their own, and a `minProperties` the named ones do
        // not reach, take what `additionalProperties` allows.
        let extra = match map.get("additionalProperties") {
            Some(Value::Bool(false)) => None,
            Some(schema @ Value::Object(_)) => Some(schema.clone()),
            _ => Some(Value::Bool(true)),
        };
        for name in required {
            if !out.contains_key(name) {
                let schema = extra.clone().ok_or_else(|| {
                    format!("property {name:?} is required but has no schema and no additional properties are allowed")
                })?;
                out.insert(name.to_owned(), self.value(&schema, depth + 1)?);
            }
        }
        let mut n = 0;
        while (out.len() as u64) < fewest {
            let schema = extra
                .clone()
                .ok_or("minProperties cannot be reached without additional properties")?;
            n += 1;
            out.insert(format!("extra_{n}"), self.value(&schema, depth + 1)?);
        }
        Ok(Value::Object(out))
    }

    fn array(&mut self, map: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let fewest = count(map, "minItems").unwrap_or(0);
        let most = count(map, "maxItems").unwrap_or(u64::MAX);
        if fewest > MOST_ITEMS {
            return Err(format!(
                "minItems {fewest} is more than the simulator generates ({MOST_ITEMS})"
            ));
        }
        if most < fewest {
            return Err(format!("maxItems {most} is below minItems {fewest}"));
        }
        let prefix = map
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let items = map.get("items").cloned().unwrap_or(Value::Bool(true));
        let natural = if depth >= SHALLOW {
            0
        } else {
            1 + self.source.below(3)
        };
        let wanted = natural.max(fewest).min(most).min(MOST_ITEMS);
        let unique = map.get("uniqueItems") == Some(&Value::Bool(true));
        let mut out: Vec<Value> = Vec::new();
        for i in 0..wanted {
            let schema = prefix
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .unwrap_or(&items);
            let mut value = self.value(schema, depth + 1)?;
            let mut tries = 0;
            while unique && out.contains(&value) && tries < 16 {
                value = self.value(schema, depth + 1)?;
                tries += 1;
            }
            if unique && out.contains(&value) {
                if i >= fewest {
                    break;
                }
                return Err("uniqueItems: the item schema has too few distinct values".into());
            }
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn number(&mut self, map: &Map<String, Value>, integer: bool) -> Result<Value, String> {
        let float = |key: &str| map.get(key).and_then(Value::as_f64);
        let flag = |key: &str| map.get(key) == Some(&Value::Bool(true));
        // Bounds as a closed interval [low, high]; an exclusive bound (draft 6's number or draft
        // 4's boolean beside minimum/maximum) moves in by a step.
        let step = if integer { 1.0 } else { 1e-6 };
        let mut low = float("minimum").unwrap_or(f64::NEG_INFINITY);
        let mut high = float("maximum").unwrap_or(f64::INFINITY);
        if flag("exclusiveMinimum") {
            low += step;
        }
        if flag("exclusiveMaximum") {
            high -= step;
        }
        if let Some(x) = float("exclusiveMinimum") {
            low = low.max(x + step);
        }
        if let Some(x) = float("exclusiveMaximum") {
            high = high.min(x - step);
        }
        if integer {
            low = low.ceil();
            high = high.floor();
        }
        if low > high {
            return Err(format!("no number lies between {low} and {high}"));
        }
        let multiple = float("multipleOf").filter(|m| *m > 0.0);
        let fits = |n: f64| {
            n >= low
                && n <= high
                && (!integer || n.fract() == 0.0)
                && multiple.is_none_or(|m| ((n / m).round() * m - n).abs() < 1e-9)
        };
        if let Some(n) = self.source.number(fits) {
            return Ok(number(n, integer));
        }
        // A draw in the bounds, or in a small natural range where they are open.
        let (from, to) = match (low.is_finite(), high.is_finite()) {
            (true, true) => (low, high),
            (true, false) => (low, low + 100.0),
            (false, true) => (high - 100.0, high),
            (false, false) => (0.0, 100.0),
        };
        let n = if let Some(m) = multiple {
            let first = (from / m).ceil();
            let last = (to / m).floor();
            if first > last {
                return Err(format!("no multiple of {m} lies between {low} and {high}"));
            }
            let span = (last - first).min(1e15) as u64;
            round_like((first + self.source.below(span + 1) as f64) * m, m)
        } else if integer {
            let span = (to - from).min(1e15) as u64;
            from + self.source.below(span + 1) as f64
        } else {
            let raw = from + self.source.unit() * (to - from);
            let rounded = (raw * 100.0).round() / 100.0;
            if rounded >= low && rounded <= high {
                rounded
            } else {
                raw
            }
        };
        Ok(number(
            n,
            integer || multiple.is_some_and(|m| m.fract() == 0.0),
        ))
    }

    fn string(&mut self, map: &Map<String, Value>) -> Result<Value, String> {
        let fewest = count(map, "minLength").unwrap_or(0);
        let most = count(map, "maxLength").unwrap_or(u64::MAX);
        if fewest > LONGEST {
            return Err(format!(
                "minLength {fewest} is more than the simulator generates ({LONGEST})"
            ));
        }
        if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
            return self.matching(pattern, fewest, most);
        }
        let text = match map.get("format").and_then(Value::as_str) {
            Some("date-time") => format!("{}T{}Z", self.date(), self.time()),
            Some("date") => self.date(),
            Some("time") => format!("{}Z", self.time()),
            Some("email") => format!("{}@example.com", self.slug()),
            Some("uri" | "url" | "iri") => format!("https://example.com/{}", self.slug()),
            Some("hostname") => format!("{}.example.com", self.slug()),
            Some("uuid") => {
                let a = self.source.next_u64();
                let b = self.source.next_u64();
                let hex = format!("{a:016x}{b:016x}");
                format!(
                    "{}-{}-4{}-a{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[13..16],
                    &hex[17..20],
                    &hex[20..32]
                )
            }
            Some("ipv4") => format!("192.0.2.{}", 1 + self.source.below(254)),
            Some("ipv6") => format!("2001:db8::{:x}", 1 + self.source.below(0xfffe)),
            _ => {
                let mut text = self.source.word();
                let words = 1 + self.source.below(3);
                for _ in 1..words {
                    text.push(' ');
                    text.push_str(&self.source.word());
                }
                text
            }
        };
        Ok(Value::String(fit_length(text, fewest, most)))
    }

    /// A string matching `pattern` (searched, as JSON Schema's `pattern` is: anchors the pattern
    /// does not have are not added) within the length bounds.
    fn matching(&mut self, pattern: &str, fewest: u64, most: u64) -> Result<Value, String> {
        let generator = pattern_generator(pattern, LONGEST)?;
        let mut rng = StdRng::from_seed(self.source.seed());
        for _ in 0..64 {
            let text: String = rand::Rng::sample(&mut rng, &generator);
            let length = text.chars().count() as u64;
            if (fewest..=most).contains(&length) {
                return Ok(Value::String(text));
            }
        }
        Err(format!(
            "no string of {fewest} to {most} characters matching {pattern:?} was found"
        ))
    }

    fn slug(&mut self) -> String {
        let word = self.source.word();
        let slug: String = word.chars().filter(char::is_ascii_alphanumeric).collect();
        if slug.is_empty() { "user".into() } else { slug }
    }

    fn date(&mut self) -> String {
        format!(
            "{}-{:02}-{:02}",
            2000 + self.source.below(30),
            1 + self.source.below(12),
            1 + self.source.below(28)
        )
    }

    fn time(&mut self) -> String {
        format!(
            "{:02}:{:02}:{:02}",
            self.source.below(24),
            self.source.below(60),
            self.source.below(60)
        )
    }
}

/// A non-negative integer keyword (`minItems`, `maxLength`, …).
fn count(map: &Map<String, Value>, key: &str) -> Option<u64> {
    let value = map.get(key)?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| f.min(u64::MAX as f64) as u64)
    })
}

/// A whole number is written as one (`6`, not `6.0`), whatever the schema's type.
fn number(n: f64, integer: bool) -> Value {
    if (integer || n.fract() == 0.0) && n.abs() < 9.0e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// `n` rounded to as many decimals as `m` has (a multiple of 0.1 is 0.3, not
/// 0.30000000000000004).
fn round_like(n: f64, m: f64) -> f64 {
    let decimals = m
        .to_string()
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len().min(12));
    let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(12));
    (n * scale).round() / scale
}
