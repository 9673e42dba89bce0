//! `dbt-remote config`: show or change the settings in dbt_remote.yml.

use dbt_remote_core::config::{self, ConfigFile, Overrides, Settings};
use dbt_remote_core::{Error, Result};

use crate::cli::ConfigCommand;
use crate::exit::ExitStatus;
use crate::output;

fn config_file() -> Result<ConfigFile> {
    let dir = std::env::current_dir()
        .map_err(|e| Error::invalid(format!("the current folder cannot be read: {e}")))?;
    ConfigFile::load(&dir)
}

pub fn run(command: ConfigCommand) -> Result<ExitStatus> {
    let mut file = config_file()?;
    match command {
        ConfigCommand::Init => {
            file.set_defaults();
            file.save()?;
            output::note(format!("wrote {}", file.path().display()));
        }
        ConfigCommand::Set { pairs } => {
            for pair in &pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    Error::invalid(format!(
                        "{pair:?} is not KEY=VALUE (e.g. server_url=http://127.0.0.1:8001)"
                    ))
                })?;
                file.set(key.trim(), value.trim())?;
            }
            file.save()?;
        }
        ConfigCommand::Get { keys } => {
            for key in &keys {
                config::key(key)?;
            }
            for key in &keys {
                println!("{key}: {}", file.get(key).unwrap_or(""));
            }
        }
        ConfigCommand::Show => {
            let settings =
                Settings::resolve(&Overrides::default(), |v| std::env::var(v).ok(), &file)?;
            output::settings(&settings);
        }
        ConfigCommand::Delete { keys } => {
            for key in &keys {
                if !file.delete(key)? {
                    output::note(format!("{key} was not set"));
                }
            }
            file.save()?;
        }
    }
    Ok(ExitStatus::Success)
}
