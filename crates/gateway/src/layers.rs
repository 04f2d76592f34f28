//! Config profiles: where each setting comes from.
//!
//! Five layers, each overriding the ones before it, merged by figment (which keeps, for every
//! value, the layer that gave it):
//!
//! 1. **built-in defaults**: the defaults `serve --help` prints, and the simulated models;
//! 2. **the config file** (`--config` / `SWITCHYARD_CONFIG`): providers, models, `[router]`,
//!    `[cache]`, and the serve settings in `[server]`;
//! 3. **a profile section** of that file, `[profiles.<name>]`, chosen by `--profile` /
//!    `SWITCHYARD_PROFILE` (its tables merge key by key into the file's; a list such as
//!    `models` replaces the file's list whole);
//! 4. **the environment** (`SWITCHYARD_LISTEN`, ...: each serve flag's variable);
//! 5. **the command line** (`--listen`, ...).
//!
//! Clap reads the environment and the command line (so `--help`, the variable names and their
//! parsers stay in one place) and says where each value came from; figment merges. The serve
//! settings are then parsed again by clap from the merged values, so a value from the file is
//! checked exactly as the same flag would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args as _, Command, FromArgMatches as _};
use figment::value::{Dict, Map, Num, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use switchyard_inference::config::Config;

use crate::server::ServeArgs;

/// The layers' names, as `config show` prints them.
const DEFAULTS: &str = "default";
const ENVIRONMENT: &str = "environment";
const COMMAND_LINE: &str = "command line";

/// What a redacted secret prints as.
const REDACTED: &str = "<redacted>";

/// One serve setting, as clap declares it.
#[derive(Debug, Clone)]
struct Setting {
    /// Clap's id of the argument.
    id: String,
    /// The key in `[server]`: the long flag with underscores (`listen`, `database_url`,
    /// `admin_oidc_issuer`, ...).
    key: String,
    long: String,
    env: Option<String>,
    /// A value never printed (`hide_env_values`: tokens and URLs with credentials).
    secret: bool,
    /// A flag without a value (`--no-workflows`).
    switch: bool,
}

/// The serve settings: every long flag of `serve` but `--config`, which picks the file.
fn settings() -> Vec<Setting> {
    ServeArgs::augment_args(Command::new("serve"))
        .get_arguments()
        .filter(|arg| !arg.is_positional() && arg.get_id() != "config")
        .filter_map(|arg| {
            let long = arg.get_long()?.to_owned();
            Some(Setting {
                id: arg.get_id().to_string(),
                key: long.replace('-', "_"),
                long,
                env: arg
                    .get_env()
                    .map(|name| name.to_string_lossy().into_owned()),
                secret: arg.is_hide_env_values_set(),
                switch: matches!(arg.get_action(), ArgAction::SetTrue),
            })
        })
        .collect()
}

/// A layer: its name (and file), and its values under one figment profile.
struct Layer {
    name: String,
    file: Option<PathBuf>,
    profile: Profile,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let metadata = Metadata::named(self.name.clone());
        match &self.file {
            Some(path) => metadata.source(Source::File(path.clone())),
            None => metadata,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(self.profile.clone(), self.values.clone())]))
    }
}

/// The serve settings clap found, split by where it found them.
#[derive(Debug, Default)]
pub struct Given {
    defaults: Dict,
    environment: Dict,
    command_line: Dict,
}

impl Given {
    /// Splits `matches` (of `serve`, or of a command that flattens `ServeArgs`) by source.
    pub fn from_matches(matches: &ArgMatches) -> Given {
        let mut given = Given::default();
        for setting in settings() {
            let Ok(Some(raw)) = matches.try_get_raw(&setting.id) else {
                continue;
            };
            // A list setting (`value_delimiter = ','`) is kept as the text it was given in.
            let value = raw
                .map(|part| part.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            let value = Value::from(value);
            let layer = match matches.value_source(&setting.id) {
                Some(ValueSource::EnvVariable) => &mut given.environment,
                Some(ValueSource::CommandLine) => &mut given.command_line,
                _ => &mut given.defaults,
            };
            layer.insert(setting.key, value);
        }
        given
    }

    /// Only the defaults (what `config check` judges a file against).
    fn defaults_only() -> anyhow::Result<Given> {
        let matches =
            ServeArgs::augment_args(Command::new("serve")).try_get_matches_from(["serve"])?;
        let mut given = Given::from_matches(&matches);
        given.environment.clear();
        given.command_line.clear();
        Ok(given)
    }
}

fn under_server(values: Dict) -> Dict {
    Dict::from([("server".to_owned(), Value::from(values))])
}

/// A config file's base table and its `[profiles.*]` sections.
struct File {
    path: PathBuf,
    base: Dict,
    profiles: BTreeMap<String, Dict>,
}

impl File {
    fn read(path: &Path) -> anyhow::Result<File> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        File::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> anyhow::Result<File> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow!("{} is not TOML: {e}", path.display()))?;
        let mut base = Value::serialize(table)?
            .into_dict()
            .context("a TOML document is a table")?;
        let mut profiles = BTreeMap::new();
        if let Some(sections) = base.remove("profiles") {
            let sections = sections
                .into_dict()
                .context("`profiles` must be a table of [profiles.<name>] sections")?;
            for (name, section) in sections {
                if matches!(name.as_str(), "default" | "global")
                    || name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                {
                    bail!(
                        "profile name {name:?}: letters, digits, - and _ only, and not `default` or `global`"
                    );
                }
                let section = section
                    .into_dict()
                    .with_context(|| format!("[profiles.{name}] must be a table"))?;
                if section.contains_key("profiles") {
                    bail!("[profiles.{name}] cannot hold profiles of its own");
                }
                profiles.insert(name, section);
            }
        }
        // The defaults' `[server]` is a table: a scalar merged over it would be dropped.
        for (scope, table) in std::iter::once((String::new(), &base)).chain(
            profiles
                .iter()
                .map(|(name, section)| (format!("[profiles.{name}] "), section)),
        ) {
            if table.get("server").is_some_and(|v| v.as_dict().is_none()) {
                bail!("{scope}`server` must be a table ([server])");
            }
        }
        Ok(File {
            path: path.to_owned(),
            base,
            profiles,
        })
    }

    fn section(&self, profile: &str) -> anyhow::Result<&Dict> {
        self.profiles.get(profile).with_context(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            format!(
                "profile {profile} is not in {} (its profiles: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })
    }
}

/// The merged layers of one command.
pub struct Layers {
    figment: Figment,
    file: Option<PathBuf>,
    profile: Option<String>,
    settings: Vec<Setting>,
}

impl Layers {
    /// Stacks the layers: defaults, the file, its profile section, the environment, the command
    /// line. A profile needs a file that has it.
    pub fn build(
        file: Option<&Path>,
        profile: Option<&str>,
        given: Given,
    ) -> anyhow::Result<Layers> {
        let file = file.map(File::read).transpose()?;
        Layers::stack(file.as_ref(), profile, given)
    }

    fn stack(file: Option<&File>, profile: Option<&str>, given: Given) -> anyhow::Result<Layers> {
        let mut figment = Figment::new().merge(Layer {
            name: DEFAULTS.into(),
            file: None,
            profile: Profile::Default,
            values: under_server(given.defaults),
        });
        match (file, profile) {
            (Some(file), profile) => {
                figment = figment.merge(Layer {
                    name: format!("file {}", file.path.display()),
                    file: Some(file.path.clone()),
                    profile: Profile::Default,
                    values: file.base.clone(),
                });
                if let Some(name) = profile {
                    figment = figment.merge(Layer {
                        name: format!("profile {name}"),
                        file: Some(file.path.clone()),
                        profile: Profile::new(name),
                        values: file.section(name)?.clone(),
                    });
                }
            }
            (None, Some(name)) => bail!(
                "profile {name} is chosen, but there is no config file (--config or SWITCHYARD_CONFIG) to hold [profiles.{name}]"
            ),
            (None, None) => {}
        }
        figment = figment
            .merge(Layer {
                name: ENVIRONMENT.into(),
                file: None,
                profile: Profile::Global,
                values: under_server(given.environment),
            })
            .merge(Layer {
                name: COMMAND_LINE.into(),
                file: None,
                profile: Profile::Global,
                values: under_server(given.command_line),
            });
        if let Some(name) = profile {
            figment = figment.select(name);
        }
        Ok(Layers {
            figment,
            file: file.map(|f| f.path.clone()),
            profile: profile.map(str::to_owned),
            settings: settings(),
        })
    }

    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The merged `[server]` table.
    fn server(&self) -> anyhow::Result<Dict> {
        let server: Dict = self
            .figment
            .extract_inner("server")
            .map_err(|e| anyhow!("[server]: {e}"))?;
        for key in server.keys() {
            if !self.settings.iter().any(|s| &s.key == key) {
                let known: Vec<&str> = self.settings.iter().map(|s| s.key.as_str()).collect();
                bail!(
                    "server.{key} is not a serve setting (they are: {})",
                    known.join(", ")
                );
            }
        }
        Ok(server)
    }

    /// The serve settings, each parsed by the flag's own parser from the merged value.
    pub fn serve_args(&self) -> anyhow::Result<ServeArgs> {
        let server = self.server()?;
        let mut argv = vec!["serve".to_owned()];
        for setting in &self.settings {
            let Some(value) = server.get(&setting.key) else {
                continue;
            };
            let text = scalar(value).with_context(|| {
                format!(
                    "server.{} must be a string, a number, a boolean or a list of them ({})",
                    setting.key,
                    self.source(&format!("server.{}", setting.key))
                )
            })?;
            if setting.switch {
                match text.as_str() {
                    "true" => argv.push(format!("--{}", setting.long)),
                    "false" => {}
                    other => bail!(
                        "server.{} = {other:?} is not true or false ({})",
                        setting.key,
                        self.source(&format!("server.{}", setting.key))
                    ),
                }
            } else {
                argv.push(format!("--{}={text}", setting.long));
            }
        }
        if let Some(file) = &self.file {
            argv.push(format!("--config={}", file.display()));
        }
        let matches = ServeArgs::augment_args(Command::new("serve"))
            .try_get_matches_from(&argv)
            .map_err(|error| {
                let culprit = self.settings.iter().find(|s| {
                    error
                        .get(clap::error::ContextKind::InvalidArg)
                        .is_some_and(|arg| arg.to_string().starts_with(&format!("--{} ", s.long)))
                });
                match culprit {
                    Some(setting) => anyhow!(
                        "server.{} ({}): {}",
                        setting.key,
                        self.source(&format!("server.{}", setting.key)),
                        first_line(&error.to_string())
                    ),
                    None => anyhow!("serve settings: {}", first_line(&error.to_string())),
                }
            })?;
        Ok(ServeArgs::from_arg_matches(&matches)?)
    }

    /// The providers, models, router and cache: the file merged with its profile section
    /// (the built-in config without a file), checked.
    pub fn model_config(&self) -> anyhow::Result<Config> {
        let Some(path) = &self.file else {
            return crate::stack::builtin_config();
        };
        self.document()?
            .checked()
            .map_err(|e| anyhow!("config {}{}: {e}", path.display(), self.in_profile()))
    }

    /// The merged document as a config, not yet checked (the built-in config without a file).
    fn document(&self) -> anyhow::Result<Config> {
        let Some(path) = &self.file else {
            return crate::stack::builtin_config();
        };
        let mut document: Dict = self
            .figment
            .extract()
            .map_err(|e| anyhow!("config {}: {e}", path.display()))?;
        document.remove("server");
        Value::from(document)
            .deserialize()
            .map_err(|e| anyhow!("config {}: {e}", path.display()))
    }

    fn in_profile(&self) -> String {
        self.profile
            .as_ref()
            .map(|p| format!(" with profile {p}"))
            .unwrap_or_default()
    }

    /// Where the value at `key` (dotted) came from: the layer, and for the environment and
    /// the command line the variable or the flag.
    fn source(&self, key: &str) -> String {
        let name = match self.figment.find_metadata(key) {
            Some(metadata) => metadata.name.to_string(),
            None if key.starts_with("server.") || self.file.is_some() => DEFAULTS.into(),
            None => "built-in config".into(),
        };
        let setting = key
            .strip_prefix("server.")
            .and_then(|k| self.settings.iter().find(|s| s.key == k));
        match (name.as_str(), setting) {
            (ENVIRONMENT, Some(Setting { env: Some(var), .. })) => format!("env {var}"),
            (COMMAND_LINE, Some(setting)) => format!("flag --{}", setting.long),
            _ => name,
        }
    }

    /// Whether the merged list at `list` has the item path `rest` (`0].sim.latency_ms`).
    fn list_has(&self, list: &str, rest: &str) -> bool {
        let Ok(mut value) = self.figment.find_value(list) else {
            return false;
        };
        let mut path = format!("[{rest}");
        while !path.is_empty() {
            let (next, remainder) = if let Some(after) = path.strip_prefix('[') {
                let Some((index, after)) = after.split_once(']') else {
                    return false;
                };
                let item = index.parse::<usize>().ok().and_then(|i| match &value {
                    Value::Array(_, items) => items.get(i).cloned(),
                    _ => None,
                });
                (item, after.to_owned())
            } else if let Some(after) = path.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let item = match &value {
                    Value::Dict(_, dict) => dict.get(&after[..end]).cloned(),
                    _ => None,
                };
                (item, after[end..].to_owned())
            } else {
                return false;
            };
            let Some(next) = next else {
                return false;
            };
            value = next;
            path = remainder;
        }
        true
    }

    /// Every effective value, one `key = value  # source` line each, secrets redacted.
    pub fn show(&self) -> anyhow::Result<Vec<Shown>> {
        let server = self.server()?;
        let mut shown = Vec::new();
        for setting in &self.settings {
            let key = format!("server.{}", setting.key);
            let value = match server.get(&setting.key) {
                None => None,
                Some(value) => {
                    let text = scalar(value).unwrap_or_default();
                    Some(if setting.secret && !text.is_empty() {
                        serde_json::Value::String(REDACTED.into())
                    } else {
                        redact_url(typed(&text))
                    })
                }
            };
            let source = if value.is_some() {
                self.source(&key)
            } else {
                "unset".into()
            };
            shown.push(Shown { key, value, source });
        }
        let config = serde_json::to_value(self.model_config()?)?;
        let mut leaves = Vec::new();
        flatten("", &config, &mut leaves);
        for (key, value) in leaves {
            let source = match key.split_once('[') {
                _ if self.file.is_none() => "built-in config".to_owned(),
                None => self.source(&key),
                // A list is one value to figment: an item's key comes from the layer that gave
                // the list when the item has it, and is the field's default otherwise.
                Some((list, rest)) if self.list_has(list, rest) => self.source(list),
                Some(_) => DEFAULTS.to_owned(),
            };
            shown.push(Shown {
                key,
                value: Some(redact_url(value)),
                source,
            });
        }
        Ok(shown)
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or(text)
        .trim_start_matches("error: ")
}

/// A scalar's text as a flag would take it (a list's items joined by commas).
fn scalar(value: &Value) -> Option<String> {
    Some(match value {
        Value::String(_, text) => text.clone(),
        Value::Char(_, c) => c.to_string(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, num) => match *num {
            Num::F32(f) => f.to_string(),
            Num::F64(f) => f.to_string(),
            other => other
                .to_i128()
                .map(|i| i.to_string())
                .or_else(|| other.to_u128().map(|u| u.to_string()))?,
        },
        Value::Array(_, items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    })
}

/// The model config of a command that only needs it (`run`, `replay`, `eval`, ...).
pub fn model_config(file: Option<&Path>, profile: Option<&str>) -> anyhow::Result<Config> {
    Layers::build(file, profile, Given::default())?.model_config()
}

/// `config check`.
mod check;
/// `config show`'s rendering.
mod show;

pub use check::check;
pub use show::{Shown, render};
use show::{flatten, redact_url, typed};

#[cfg(test)]
mod tests;
