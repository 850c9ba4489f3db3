//! A state in an S3 object, safe against a second writer twice over: the
//! `<key>.lock` object (created with `If-None-Match: *`) keeps honest runs
//! apart, and every state write is a compare-and-swap on the ETag that was
//! read, so even a writer that skipped the lock cannot be silently overwritten.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::sync::Mutex;

use super::codec::{self, Problem};
use super::lock::{self, Attempt};
use super::{LockInfo, Location, S3Failure, State, StateError};

pub struct S3Store {
    client: Client,
    bucket: String,
    key: String,
    /// What the last load or save saw; the next save is conditional on it.
    seen: Mutex<Seen>,
    /// Where to keep a state whose write failed: the first that can be written.
    errored_copy: Vec<PathBuf>,
}

enum Seen {
    /// Not loaded (or what was loaded could not be read): a save may only create.
    Unknown,
    /// Loaded, and there was no state.
    Absent,
    Object { etag: String, bytes: Vec<u8> },
    /// Loaded, and unreadable: a save (e.g. `karpctl state push`) first moves
    /// it to `<key>.corrupt`, never overwriting it unkept.
    Unreadable { etag: String, bytes: Vec<u8> },
}

/// What a GetObject found.
enum Fetched {
    Missing,
    Found { etag: Option<String>, bytes: Vec<u8> },
}

impl S3Store {
    pub fn new(client: Client, bucket: impl Into<String>, key: impl Into<String>) -> S3Store {
        S3Store { client, bucket: bucket.into(), key: key.into(), seen: Mutex::new(Seen::Unknown), errored_copy: Vec::new() }
    }

    /// Where to keep a local copy of a state whose write to S3 failed
    /// (otherwise it is only in memory and the error says so). Called again,
    /// adds a fallback for when the earlier places cannot be written.
    pub fn with_errored_copy(mut self, path: PathBuf) -> S3Store {
        self.errored_copy.push(path);
        self
    }

    /// The local copies karpctl itself asks for: `./<name>.errored` in the
    /// working directory (where the user ran the command), else
    /// `$TMPDIR/karpctl-<name>.errored`; `<name>` is the key's last segment.
    pub fn with_default_errored_copies(self) -> S3Store {
        let name = self.key.rsplit('/').next().filter(|n| !n.is_empty() && *n != "." && *n != "..").unwrap_or("state").to_string();
        self.with_errored_copy(PathBuf::from(format!("{name}.errored"))).with_errored_copy(super::errored_in_temp_dir(&name))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn backup_key(&self) -> String {
        format!("{}.backup", self.key)
    }

    /// Where an unreadable state is moved when a new one is saved over it.
    pub fn corrupt_key(&self) -> String {
        format!("{}.corrupt", self.key)
    }

    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    pub fn location(&self) -> Location {
        Location::S3 { bucket: self.bucket.clone(), key: self.key.clone() }
    }

    pub async fn load(&self) -> Result<Option<State>, StateError> {
        let mut seen = self.seen.lock().await;
        *seen = Seen::Unknown;
        let (etag, bytes) = match self.fetch(&self.key).await? {
            Fetched::Missing => {
                *seen = Seen::Absent;
                return Ok(None);
            }
            Fetched::Found { etag, bytes } => (etag, bytes),
        };
        let Some(etag) = etag else {
            return Err(self.err_plain("GetObject", &self.key, "the response has no ETag, so writes cannot be guarded"));
        };
        match codec::decode_raw(&bytes) {
            Ok(state) => {
                *seen = Seen::Object { etag, bytes };
                Ok(Some(state))
            }
            Err(p) => {
                if let Problem::Corrupt { .. } = p {
                    *seen = Seen::Unreadable { etag, bytes };
                }
                Err(p.at(self.location(), true))
            }
        }
    }

    pub async fn save(&self, s: &mut State) -> Result<(), StateError> {
        let mut seen = self.seen.lock().await;
        let before = (s.serial, s.tool_version.clone());
        s.serial += 1;
        s.tool_version = env!("CARGO_PKG_VERSION").to_string();
        let data = codec::encode_bytes(s);
        match self.put_state(&seen, &data).await {
            Ok(etag) => {
                *seen = match etag {
                    Some(etag) => Seen::Object { etag, bytes: data },
                    // Cannot guard the next write without it: make it reload first.
                    None => Seen::Unknown,
                };
                Ok(())
            }
            Err(e) => {
                (s.serial, s.tool_version) = before;
                Err(match e {
                    StateError::Conflict { .. } => e,
                    cause => {
                        let errored = super::keep_unsaved(&self.errored_copy, &data);
                        StateError::WriteFailed { location: self.location(), cause: Box::new(cause), errored }
                    }
                })
            }
        }
    }

    /// Backs up what was read, then writes `data` only if the object is still
    /// that (or still absent). Returns the new ETag.
    async fn put_state(&self, seen: &Seen, data: &[u8]) -> Result<Option<String>, StateError> {
        let copy = |key: String, bytes: &[u8]| {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(bytes.to_vec()));
            async move { req.send().await.map(|_| ()).map_err(|e| self.err("PutObject", &key, e)) }
        };
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(data.to_vec()));
        let put = match seen {
            Seen::Object { etag, bytes } => {
                copy(self.backup_key(), bytes).await?;
                put.if_match(etag)
            }
            Seen::Unreadable { etag, bytes } => {
                copy(self.corrupt_key(), bytes).await?;
                put.if_match(etag)
            }
            Seen::Absent | Seen::Unknown => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(out.e_tag().map(str::to_string)),
            Err(e) if precondition_failed(&e) => Err(StateError::Conflict { location: self.location() }),
            Err(e) => Err(self.err("PutObject", &self.key, e)),
        }
    }

    pub async fn lock(
        &self,
        info: &LockInfo,
        timeout: Duration,
        on_wait: &(dyn Fn(&LockInfo) + Sync),
    ) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(info).expect("lock info serializes");
        let lock_key = self.lock_key();
        lock::acquire(&self.location(), &lock_key, info, timeout, on_wait, || self.try_lock(&data)).await
    }

    async fn try_lock(&self, data: &[u8]) -> Result<Attempt, StateError> {
        let lock_key = self.lock_key();
        // A holder that lets go between our put and our read: try again at once.
        for _ in 0..3 {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&lock_key)
                .content_type("application/json")
                .if_none_match("*")
                .body(ByteStream::from(data.to_vec()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(Attempt::Acquired),
                Err(e) if precondition_failed(&e) => match self.read_lock().await? {
                    None => continue,
                    Some(Ok(h)) => return Ok(Attempt::Held(h)),
                    Some(Err(detail)) => return Ok(Attempt::Unreadable(detail)),
                },
                Err(e) => return Err(self.err("PutObject", &lock_key, e)),
            }
        }
        Ok(Attempt::Unreadable("the lock object keeps appearing and disappearing".into()))
    }

    pub async fn unlock(&self, id: &str) -> Result<(), StateError> {
        let lock_key = self.lock_key();
        let holder = match self.read_lock().await? {
            None => return Ok(()),
            Some(Ok(h)) => h,
            Some(Err(detail)) => {
                return Err(StateError::LockUnreadable { location: self.location(), lock: lock_key, detail })
            }
        };
        if holder.id != id {
            return Err(StateError::NotLockHolder { location: self.location(), id: id.to_string(), holder: Box::new(holder) });
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&lock_key)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", &lock_key, e))?;
        Ok(())
    }

    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        match self.read_lock().await? {
            None => Ok(None),
            Some(Ok(h)) => Ok(Some(h)),
            Some(Err(detail)) => {
                Err(StateError::LockUnreadable { location: self.location(), lock: self.lock_key(), detail })
            }
        }
    }

    async fn read_lock(&self) -> Result<Option<Result<LockInfo, String>>, StateError> {
        Ok(match self.fetch(&self.lock_key()).await? {
            Fetched::Missing => None,
            Fetched::Found { bytes, .. } => Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string())),
        })
    }

    async fn fetch(&self, key: &str) -> Result<Fetched, StateError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(Fetched::Missing),
            Err(e) => return Err(self.err("GetObject", key, e)),
        };
        let etag = out.e_tag().map(str::to_string);
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.err_plain("GetObject", key, &format!("reading the body: {}", DisplayErrorContext(&e))))?;
        Ok(Fetched::Found { etag, bytes: body.into_bytes().to_vec() })
    }

    /// An SDK error as a [`StateError::S3`]: code, message and request id.
    fn err<E>(&self, op: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        let request_id = e.request_id().map(str::to_string);
        let message = match (e.message(), &code) {
            (Some(m), _) => m.to_string(),
            // No service error to speak of (no credentials, a timeout, connection refused …):
            // in words, with the region and profile (the SDK's chain with -v).
            (None, None) => crate::aws::AwsError::from_sdk(op, &e).words(),
            (None, Some(_)) => status.map(|s| format!("HTTP {s}")).unwrap_or_default(),
        };
        StateError::S3(Box::new(S3Failure {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            status,
            code,
            message,
            request_id,
        }))
    }

    fn err_plain(&self, op: &'static str, key: &str, message: &str) -> StateError {
        StateError::S3(Box::new(S3Failure {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            status: None,
            code: None,
            message: message.to_string(),
            request_id: None,
        }))
    }
}

/// 412 PreconditionFailed, or 409 ConditionalRequestConflict (S3's answer
/// when two conditional writes race): either way the condition did not hold.
fn precondition_failed<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
        || matches!(e.code(), Some("PreconditionFailed") | Some("ConditionalRequestConflict"))
}
