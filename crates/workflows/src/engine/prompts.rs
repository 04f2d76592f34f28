//! `prompt_ref` on `llm` calls: the registered prompt's system (and developer) messages fill
//! the call's `system`, its user messages the call's `prompt`, where the node leaves them out;
//! the reference is pinned to the version found, so a run never reads the registry for it.
//! The prompt's templates then render over the run's state like the node's own.

use crate::error::{Error, Result};
use crate::registry::Catalog;
use crate::spec::{Node, SpecError, WorkflowSpec};

/// Resolves every `prompt_ref` of the spec against the tenant's prompts; every problem at once.
pub fn resolve(mut spec: WorkflowSpec, catalog: &Catalog) -> Result<WorkflowSpec> {
    let mut errors = Vec::new();
    for (i, node) in spec.nodes.iter_mut().enumerate() {
        resolve_node(&format!("nodes[{i}]"), node, catalog, &mut errors);
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(Error::Spec(errors))
    }
}

fn resolve_node(path: &str, node: &mut Node, catalog: &Catalog, errors: &mut Vec<SpecError>) {
    fill(
        path,
        Fields {
            prompt_ref: &mut node.prompt_ref,
            system: &mut node.system,
            prompt: &mut node.prompt,
        },
        catalog,
        errors,
    );
    for (field, call) in [
        ("node", &mut node.node),
        ("compensate", &mut node.compensate),
    ] {
        if let Some(call) = call.as_deref_mut() {
            fill(
                &format!("{path}.{field}"),
                Fields {
                    prompt_ref: &mut call.prompt_ref,
                    system: &mut call.system,
                    prompt: &mut call.prompt,
                },
                catalog,
                errors,
            );
        }
    }
}

struct Fields<'a> {
    prompt_ref: &'a mut Option<String>,
    system: &'a mut Option<String>,
    prompt: &'a mut Option<String>,
}

fn fill(path: &str, fields: Fields<'_>, catalog: &Catalog, errors: &mut Vec<SpecError>) {
    let Some(reference) = fields.prompt_ref.as_deref() else {
        return;
    };
    let at = format!("{path}.prompt_ref");
    let (name, version) = match switchyard_manifests::parse_reference(reference) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(SpecError::new(at, e.to_string()));
            return;
        }
    };
    let Some((version, prompt)) = catalog.prompt(&name, version) else {
        errors.push(SpecError::new(
            at,
            format!("prompt `{reference}` is not registered for this tenant"),
        ));
        return;
    };
    let mut system = Vec::new();
    let mut user = Vec::new();
    for message in &prompt.messages {
        match message.role.as_str() {
            "system" | "developer" => system.push(message.content.as_str()),
            "user" => user.push(message.content.as_str()),
            _ => {
                errors.push(SpecError::new(
                    at,
                    format!(
                        "prompt `{name}@{version}` has an `{}` message: a workflow node takes system and user messages",
                        message.role
                    ),
                ));
                return;
            }
        }
    }
    if fields.system.is_none() && !system.is_empty() {
        *fields.system = Some(system.join("\n\n"));
    }
    if fields.prompt.is_none() {
        if user.is_empty() {
            errors.push(SpecError::new(
                at,
                format!(
                    "prompt `{name}@{version}` has no user message and the node sets no `prompt`"
                ),
            ));
            return;
        }
        *fields.prompt = Some(user.join("\n\n"));
    }
    *fields.prompt_ref = Some(format!("{name}@{version}"));
}
