//! `passbolt-sync create`: a new resource in passbolt, in the server's
//! default format, shared with the users and groups named, its id printed.
//! `--if-missing` makes provisioning scripts idempotent: a resource of the
//! same name in the same folder is reused, unchanged.

use std::io::Write;

use crate::cli::set::SetError;
use crate::cli::{self, AppError};
use passbolt_client::generate;
use passbolt_client::secret::Secret;
use passbolt_client::write::{NewResource, WriteError};

/// What `create` was asked to make.
pub struct CreateArgs<'a> {
    pub name: &'a str,
    /// `Parent/Child`; `None` for the root.
    pub folder: Option<&'a str>,
    pub username: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub share_groups: &'a [String],
    pub share_users: &'a [String],
    pub if_missing: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Set(#[from] SetError),
    #[error(
        "a resource named {name:?} already exists in {}: {id}; pass --if-missing to reuse it",
        folder.as_deref().unwrap_or("the root")
    )]
    Exists {
        name: String,
        folder: Option<String>,
        id: String,
    },
    #[error("no folder {0:?} is visible to this account")]
    NoFolder(String),
    #[error("no active user {0:?} on the server")]
    NoUser(String),
    #[error("no group {0:?} on the server")]
    NoGroup(String),
    #[error("--name must not be empty")]
    EmptyName,
    #[error(
        "created {id}, but sharing it failed: {source}. The resource exists and is personal: share it in passbolt (`create --if-missing` would only print its id)"
    )]
    Share {
        id: String,
        #[source]
        source: WriteError,
    },
}

impl CreateError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CreateError::Set(e) => e.exit_code(),
            CreateError::EmptyName
            | CreateError::NoFolder(_)
            | CreateError::NoUser(_)
            | CreateError::NoGroup(_) => 2,
            _ => 1,
        }
    }
}

impl From<AppError> for CreateError {
    fn from(e: AppError) -> CreateError {
        CreateError::Set(SetError::App(e))
    }
}

impl From<WriteError> for CreateError {
    fn from(e: WriteError) -> CreateError {
        CreateError::Set(SetError::Write(e))
    }
}

/// Creates (or with `if_missing` finds) the resource and prints its id on
/// `out`; the value, with `print`, follows on `print` only.
pub async fn create(
    config: &crate::config::Config,
    args: &CreateArgs<'_>,
    value: Option<Secret>,
    out: &mut dyn Write,
    print: Option<&mut dyn Write>,
) -> Result<String, CreateError> {
    if args.name.is_empty() {
        return Err(CreateError::EmptyName);
    }
    let client = cli::connect(config).await?;
    let result = run(&client, args, value).await;
    let _ = client.logout().await;
    let (id, value) = result?;
    writeln!(out, "{id}").map_err(SetError::Stdout)?;
    if let (Some(p), Some(v)) = (print, value) {
        p.write_all(v.expose().as_bytes())
            .and_then(|()| p.flush())
            .map_err(SetError::Stdout)?;
    }
    Ok(id)
}

async fn run(
    client: &passbolt_client::Client,
    args: &CreateArgs<'_>,
    value: Option<Secret>,
) -> Result<(String, Option<Secret>), CreateError> {
    let folder = args
        .folder
        .map(|f| f.trim_matches('/'))
        .filter(|f| !f.is_empty());
    let listing = client.list(true).await.map_err(AppError::from)?;
    let existing: Vec<&passbolt_client::secret::Resource> = listing
        .resources
        .iter()
        .filter(|r| r.name == args.name && r.folder.as_deref() == folder)
        .collect();
    if let Some(r) = existing.first() {
        if args.if_missing {
            tracing::info!(resource_id = %r.id, "exists; --if-missing leaves it unchanged");
            return Ok((r.id.clone(), None));
        }
        return Err(CreateError::Exists {
            name: args.name.into(),
            folder: folder.map(str::to_string),
            id: r.id.clone(),
        });
    }
    let folder_id = match folder {
        Some(f) => Some(
            client
                .folder_id(f)
                .await
                .map_err(AppError::from)?
                .ok_or_else(|| CreateError::NoFolder(f.into()))?,
        ),
        None => None,
    };
    // Every name is resolved before anything is created.
    let mut users = Vec::new();
    for email in args.share_users {
        users.push(
            client
                .user_id_by_email(email)
                .await
                .map_err(AppError::from)?
                .ok_or_else(|| CreateError::NoUser(email.clone()))?,
        );
    }
    let mut groups = Vec::new();
    for name in args.share_groups {
        groups.push(
            client
                .group_id_by_name(name)
                .await
                .map_err(AppError::from)?
                .ok_or_else(|| CreateError::NoGroup(name.clone()))?,
        );
    }
    let value = match value {
        Some(v) => v,
        None => {
            let policy = client.password_policy().await.map_err(AppError::from)?;
            generate::generate(policy.as_ref()).map_err(SetError::from)?
        }
    };
    let created = client
        .create(NewResource {
            name: args.name,
            username: args.username,
            uri: args.uri,
            folder_parent_id: folder_id.as_deref(),
            password: &value,
        })
        .await?;
    if !users.is_empty() || !groups.is_empty() {
        client
            .share_read(&created.id, &users, &groups)
            .await
            .map_err(|source| CreateError::Share {
                id: created.id.clone(),
                source,
            })?;
    }
    Ok((created.id, Some(value)))
}
