//! The object store of enforcement bundles: archives stored under the
//! lower-case hex SHA-256 digest of their bytes.

use tokio::io::AsyncReadExt;

use crate::Broker;
use crate::refusal::is_api_subject_of;

/// An object-store operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("object store {store}, object {name}: {detail}")]
pub struct ObjectError {
    /// The store.
    pub store: String,
    /// The object name.
    pub name: String,
    /// What went wrong.
    pub detail: String,
}

impl Broker {
    /// Stores `bytes` as `name` in the enforcement store, unless an object of
    /// that name is there already (names are digests, so it is the same).
    /// Whether it was stored now.
    pub async fn put_bundle(&self, name: &str, bytes: &[u8]) -> Result<bool, ObjectError> {
        self.guarded_object(name, self.put_bundle_unguarded(name, bytes))
            .await
    }

    /// The bytes of object `name` in the enforcement store.
    pub async fn get_bundle(&self, name: &str) -> Result<Vec<u8>, ObjectError> {
        self.guarded_object(name, self.get_bundle_unguarded(name))
            .await
    }

    /// Runs `operation` on the enforcement store, ending it at once with the
    /// server's refusal when the user may not make one of its requests.
    async fn guarded_object<T>(
        &self,
        name: &str,
        operation: impl std::future::Future<Output = Result<T, ObjectError>>,
    ) -> Result<T, ObjectError> {
        let store = self.names().enforcement_store();
        let stream = format!("OBJ_{store}");
        let objects = format!("$O.{store}.");
        self.refusals()
            .guard(
                |subject| is_api_subject_of(subject, &stream) || subject.starts_with(&objects),
                operation,
            )
            .await
            .map_err(|detail| ObjectError {
                store,
                name: name.to_owned(),
                detail,
            })?
    }

    async fn put_bundle_unguarded(&self, name: &str, bytes: &[u8]) -> Result<bool, ObjectError> {
        let store_name = self.names().enforcement_store();
        let fail = |detail: String| ObjectError {
            store: store_name.clone(),
            name: name.to_owned(),
            detail,
        };
        let store = self
            .jetstream()
            .get_object_store(&store_name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if store.info(name).await.is_ok() {
            return Ok(false);
        }
        let mut reader = bytes;
        store
            .put(name, &mut reader)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(true)
    }

    async fn get_bundle_unguarded(&self, name: &str) -> Result<Vec<u8>, ObjectError> {
        let store_name = self.names().enforcement_store();
        let fail = |detail: String| ObjectError {
            store: store_name.clone(),
            name: name.to_owned(),
            detail,
        };
        let store = self
            .jetstream()
            .get_object_store(&store_name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut object = store.get(name).await.map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(bytes)
    }
}
