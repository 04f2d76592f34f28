//! Templates and conditions on a run's state (MiniJinja), deterministic and bounded.
//!
//! The context holds `input`, `steps.<id>.output`, and in a map's node `item` and `index`.
//! Undefined names are errors (strict mode), and each evaluation has a fuel budget, so a
//! hostile template cannot loop for long.

use std::sync::OnceLock;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Instructions one evaluation may execute.
const FUEL: u64 = 200_000;
/// The longest rendered text.
const MAX_RENDERED: usize = 1 << 20;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env
    })
}

/// Whether `source` is a valid template (syntax only).
pub fn check_template(source: &str) -> Result<(), String> {
    env()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Whether `source` is a valid expression (syntax only).
pub fn check_expression(source: &str) -> Result<(), String> {
    env()
        .compile_expression(source)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Renders a template to text.
pub fn render(source: &str, context: &Value) -> Result<String, String> {
    let text = env()
        .render_str(source, Serde(context))
        .map_err(|e| describe(&e))?;
    if text.len() > MAX_RENDERED {
        return Err(format!(
            "renders to {} bytes; at most {MAX_RENDERED}",
            text.len()
        ));
    }
    Ok(text)
}

/// Evaluates an expression to a JSON value.
pub fn eval(source: &str, context: &Value) -> Result<Value, String> {
    let expression = env().compile_expression(source).map_err(|e| describe(&e))?;
    let value = expression.eval(Serde(context)).map_err(|e| describe(&e))?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

/// Evaluates a condition: true when the expression's value is truthy.
pub fn holds(source: &str, context: &Value) -> Result<bool, String> {
    let expression = env().compile_expression(source).map_err(|e| describe(&e))?;
    expression
        .eval(Serde(context))
        .map(|v| v.is_true())
        .map_err(|e| describe(&e))
}

/// Renders every string in a JSON value. A string that is exactly one `{{ expression }}` keeps
/// the expression's JSON type (a number stays a number, a list a list).
pub fn render_value(value: &Value, context: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => match whole_expression(text) {
            Some(expression) => eval(expression, context)?,
            None if text.contains("{{") || text.contains("{%") => {
                Value::String(render(text, context)?)
            }
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, context)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Every template in a JSON value is valid.
pub fn check_value(value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) => match whole_expression(text) {
            Some(expression) => check_expression(expression),
            None => check_template(text),
        },
        Value::Array(items) => items.iter().try_for_each(check_value),
        Value::Object(map) => map.values().try_for_each(check_value),
        _ => Ok(()),
    }
}

fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    if let Some(detail) = error.detail()
        && !text.contains(detail)
    {
        text = format!("{text}: {detail}");
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_evaluates_and_refuses() {
        let ctx = json!({"input": {"q": "hi", "n": 3}, "steps": {"a": {"output": {"score": 0.7}}}});
        assert_eq!(render("Q: {{ input.q }}", &ctx).unwrap(), "Q: hi");
        assert!(holds("steps.a.output.score > 0.5", &ctx).unwrap());
        assert_eq!(
            render_value(&json!({"n": "{{ input.n }}", "s": "x{{ input.n }}"}), &ctx).unwrap(),
            json!({"n": 3, "s": "x3"})
        );
        assert!(render("{{ input.missing.deeper }}", &ctx).is_err());
        assert!(check_template("{{ unclosed").is_err());
        // A template that would run for ever runs out of fuel.
        let forever =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(render(forever, &ctx).is_err());
    }
}
