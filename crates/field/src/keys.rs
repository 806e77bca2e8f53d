//! The device's keys: the assessor's passphrase, the key header beside the store, and
//! the keys derived from them for SQLCipher and the evidence files.
//!
//! One random 32-byte *data key* protects everything on the device. The header file
//! (`store.header`, plaintext JSON) keeps it wrapped with XChaCha20-Poly1305 under a
//! key derived from the passphrase by Argon2id with a random per-device salt; the
//! header holds only the format, the KDF parameters, the salt and the wrapped key.
//! HKDF-SHA256 derives from the data key the SQLCipher key, the evidence encryption
//! key and the evidence naming key, each for one purpose.
//!
//! Changing the passphrase wraps the same data key under the new passphrase in a new
//! header that replaces the old one by a single atomic rename: a crash at any instant
//! leaves exactly one of the two passphrases working, and no data is rewritten.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::FieldError;

/// The key header inside the data directory, beside the database.
pub const HEADER_FILE: &str = "store.header";
/// A new header while it is written; renamed over [`HEADER_FILE`] once durable.
const HEADER_NEW: &str = "store.header.new";
/// The header's format; bound into the wrapped key so that no field can be altered.
const FORMAT: &str = "sidak-field-key/1";
/// The shortest new passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// The assessor's passphrase, wiped from memory when dropped.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase as typed.
    pub fn new(text: impl Into<String>) -> Passphrase {
        Passphrase(Zeroizing::new(text.into()))
    }

    /// The first line of a file (for scripts): its line ending is not part of it.
    pub fn from_file(path: &Path) -> Result<Passphrase, FieldError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| FieldError::ReadFile { path: path.to_owned(), source })?,
        );
        let line = text.lines().next().unwrap_or("");
        Ok(Passphrase::new(line))
    }

    /// Refuses a passphrase too short to protect a device someone may take.
    pub fn check_new(&self) -> Result<(), FieldError> {
        if self.0.trim().chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(FieldError::Invalid(format!(
                "a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (several words are best)"
            )));
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Passphrase) -> bool {
        self.bytes() == other.bytes()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// Argon2id's cost, chosen when a store is created and kept in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The cheapest cost a header may ask for: below it a stolen header could be
    /// guessed against too quickly. (Tests use it to keep thousands of opens fast.)
    pub const MINIMUM: KdfParams = KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };

    fn argon2(&self) -> Result<argon2::Argon2<'static>, FieldError> {
        if self.memory_kib < Self::MINIMUM.memory_kib
            || self.iterations < Self::MINIMUM.iterations
            || self.parallelism < Self::MINIMUM.parallelism
            || self.memory_kib > 4 * 1024 * 1024
            || self.iterations > 64
            || self.parallelism > 16
        {
            return Err(FieldError::Invalid(format!(
                "Argon2id cost out of range: {} KiB, {} pass(es), {} lane(s)",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| FieldError::Invalid(format!("Argon2id cost: {e}")))?;
        Ok(argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation, with one lane as
    /// phones run it): measured in docs/field.md.
    fn default() -> KdfParams {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

/// The header file as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    kdf: KdfSection,
    wrapped_key: WrappedSection,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSection {
    algorithm: String,
    version: u32,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedSection {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

impl Header {
    fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            parallelism: self.kdf.parallelism,
        }
    }

    /// Everything but the wrapped key, as the associated data of its wrapping.
    fn bound(&self) -> String {
        let k = &self.kdf;
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.format,
            k.algorithm,
            k.version,
            k.memory_kib,
            k.iterations,
            k.parallelism,
            k.salt,
            self.wrapped_key.algorithm
        )
    }
}

type Key32 = Zeroizing<[u8; 32]>;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The random key everything on the device is protected by.
pub(crate) struct DataKey(Key32);

impl DataKey {
    fn derive(&self, purpose: &str) -> Key32 {
        let mut out = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, &self.0[..])
            .expand(format!("sidak-field/1 {purpose}").as_bytes(), &mut out[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }

    /// The SQLCipher key.
    pub(crate) fn db_key(&self) -> DbKey {
        DbKey(self.derive("sqlcipher"))
    }

    /// The evidence files' keys.
    pub(crate) fn evidence_keys(&self) -> EvidenceKeys {
        EvidenceKeys { seal: self.derive("evidence seal"), name: self.derive("evidence name") }
    }
}

/// SQLCipher's raw key.
pub(crate) struct DbKey(Key32);

impl DbKey {
    /// A fixed key for the store's own tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> DbKey {
        DbKey(Zeroizing::new([0x42; 32]))
    }

    /// Another fixed key, for the store's own tests.
    #[cfg(test)]
    pub(crate) fn other_for_tests() -> DbKey {
        DbKey(Zeroizing::new([0x43; 32]))
    }

    /// `PRAGMA key` with the raw key (SQLCipher then derives nothing from it).
    pub(crate) fn pragma(&self) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(&self.0[..]));
        Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex.as_str()))
    }
}

/// The keys of the evidence files: one encrypts them, one names them.
#[derive(Clone)]
pub struct EvidenceKeys {
    pub(crate) seal: Key32,
    pub(crate) name: Key32,
}

impl std::fmt::Debug for EvidenceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvidenceKeys(…)")
    }
}

/// Whether a key header exists in `dir`: the store was created.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(HEADER_FILE).is_file()
}

fn wrapping_key(params: &KdfParams, salt: &[u8], pass: &Passphrase) -> Result<Key32, FieldError> {
    let mut key = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(pass.bytes(), salt, &mut key[..])
        .map_err(|e| FieldError::Invalid(format!("Argon2id: {e}")))?;
    Ok(key)
}

fn wrap(key: &DataKey, pass: &Passphrase, params: &KdfParams) -> Result<Header, FieldError> {
    let salt: [u8; 16] = random_bytes();
    let nonce: [u8; 24] = random_bytes();
    let mut header = Header {
        format: FORMAT.to_owned(),
        kdf: KdfSection {
            algorithm: "argon2id".into(),
            version: 0x13,
            memory_kib: params.memory_kib,
            iterations: params.iterations,
            parallelism: params.parallelism,
            salt: hex::encode(salt),
        },
        wrapped_key: WrappedSection {
            algorithm: "xchacha20poly1305".into(),
            nonce: hex::encode(nonce),
            ciphertext: String::new(),
        },
    };
    let kek = wrapping_key(params, &salt, pass)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&kek[..]));
    let bound = header.bound();
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: &key.0[..], aad: bound.as_bytes() })
        .map_err(|_| FieldError::Corrupt("the data key could not be wrapped".into()))?;
    header.wrapped_key.ciphertext = hex::encode(sealed);
    Ok(header)
}

fn read_header(dir: &Path) -> Result<Header, FieldError> {
    let path = dir.join(HEADER_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| FieldError::ReadFile { path: path.clone(), source })?;
    let header: Header = serde_json::from_str(&text)
        .map_err(|e| FieldError::Corrupt(format!("{} is not a key header: {e}", path.display())))?;
    if header.format != FORMAT
        || header.kdf.algorithm != "argon2id"
        || header.kdf.version != 0x13
        || header.wrapped_key.algorithm != "xchacha20poly1305"
    {
        return Err(FieldError::Corrupt(format!(
            "{} is a key header this version of sidak-field does not know ({})",
            path.display(),
            header.format
        )));
    }
    Ok(header)
}

/// The data key of the store in `dir`, unwrapped with `pass`, and the cost its header
/// asks for. A wrong passphrase is [`FieldError::WrongPassphrase`]; nothing is written.
pub(crate) fn unlock(dir: &Path, pass: &Passphrase) -> Result<(DataKey, KdfParams), FieldError> {
    let header = read_header(dir)?;
    let damaged = |what: &str| FieldError::Corrupt(format!("the key header's {what} is damaged"));
    let salt = hex::decode(&header.kdf.salt).map_err(|_| damaged("salt"))?;
    let nonce = hex::decode(&header.wrapped_key.nonce).map_err(|_| damaged("nonce"))?;
    let sealed = hex::decode(&header.wrapped_key.ciphertext).map_err(|_| damaged("wrapped key"))?;
    if salt.len() < 16 || nonce.len() != 24 {
        return Err(damaged("salt or nonce"));
    }
    let params = header.params();
    let kek = wrapping_key(&params, &salt, pass)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&kek[..]));
    let bound = header.bound();
    // A wrong passphrase and an altered header both fail authentication here; the
    // first is by far the likelier, and both leave everything as it was.
    let plain = Zeroizing::new(
        cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad: bound.as_bytes() })
            .map_err(|_| FieldError::WrongPassphrase)?,
    );
    let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| damaged("wrapped key"))?;
    Ok((DataKey(Zeroizing::new(key)), params))
}

/// Creates the header of a new store in `dir` with a fresh data key.
pub(crate) fn create(dir: &Path, pass: &Passphrase, params: &KdfParams) -> Result<DataKey, FieldError> {
    pass.check_new()?;
    let key = DataKey(Zeroizing::new(random_bytes()));
    let header = wrap(&key, pass, params)?;
    write_atomically(dir, &header)?;
    Ok(key)
}

/// Wraps `key` under a new passphrase and replaces the header in one atomic rename.
pub(crate) fn rewrap(dir: &Path, key: &DataKey, new: &Passphrase, params: &KdfParams) -> Result<(), FieldError> {
    new.check_new()?;
    let header = wrap(key, new, params)?;
    write_atomically(dir, &header)
}

/// Removes a new header left by a change that crashed before its rename: it wraps the
/// key under a passphrase that never took effect.
pub(crate) fn remove_stale(dir: &Path) -> Result<(), FieldError> {
    let path = dir.join(HEADER_NEW);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FieldError::Io { path, source }),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FieldError {
    let path = path.to_owned();
    move |source| FieldError::Io { path, source }
}

fn write_atomically(dir: &Path, header: &Header) -> Result<(), FieldError> {
    write_new(dir, header)?;
    let dest = dir.join(HEADER_FILE);
    std::fs::rename(dir.join(HEADER_NEW), &dest).map_err(io(&dest))?;
    // The rename is durable only once the directory is synced.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `header` durably beside the current one, as [`HEADER_NEW`].
fn write_new(dir: &Path, header: &Header) -> Result<(), FieldError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp: PathBuf = dir.join(HEADER_NEW);
    let text = serde_json::to_string_pretty(header).expect("a header serialises");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).and_then(|_| f.write_all(b"\n")).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams::MINIMUM
    }

    #[test]
    fn the_right_passphrase_unwraps_the_same_key_and_a_wrong_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pass = Passphrase::new("kuda lumping di pasar");
        let key = create(dir.path(), &pass, &cheap()).unwrap();
        let (again, params) = unlock(dir.path(), &pass).unwrap();
        assert_eq!(key.0, again.0);
        assert_eq!(params, cheap());
        assert!(matches!(
            unlock(dir.path(), &Passphrase::new("kuda lumping di pasaR")),
            Err(FieldError::WrongPassphrase)
        ));
    }

    #[test]
    fn the_header_reveals_nothing_but_its_parameters_and_cannot_be_altered() {
        let dir = tempfile::tempdir().unwrap();
        let pass = Passphrase::new("kuda lumping di pasar");
        let key = create(dir.path(), &pass, &cheap()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(HEADER_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["format", "kdf", "wrapped_key"]);
        assert!(!text.contains(&hex::encode(&key.0[..])), "the data key is not in the clear");
        // Lowering the cost (or changing anything else it binds) breaks the wrapping.
        let weaker = text.replace("\"iterations\": 1", "\"iterations\": 2");
        assert_ne!(weaker, text);
        std::fs::write(dir.path().join(HEADER_FILE), weaker).unwrap();
        assert!(matches!(unlock(dir.path(), &pass), Err(FieldError::WrongPassphrase)));
    }

    #[test]
    fn rewrapping_keeps_the_key_and_retires_the_old_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let old = Passphrase::new("kuda lumping di pasar");
        let new = Passphrase::new("sate ayam dua tusuk");
        let key = create(dir.path(), &old, &cheap()).unwrap();
        rewrap(dir.path(), &key, &new, &cheap()).unwrap();
        assert!(matches!(unlock(dir.path(), &old), Err(FieldError::WrongPassphrase)));
        assert_eq!(unlock(dir.path(), &new).unwrap().0 .0, key.0);
        assert!(!dir.path().join(HEADER_NEW).exists());
    }

    #[test]
    fn a_change_cut_short_before_its_rename_leaves_the_old_passphrase_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = Passphrase::new("kuda lumping di pasar");
        let new = Passphrase::new("sate ayam dua tusuk");
        let key = create(dir.path(), &old, &cheap()).unwrap();
        // The new header is durable, the rename never happened.
        write_new(dir.path(), &wrap(&key, &new, &cheap()).unwrap()).unwrap();
        assert!(matches!(unlock(dir.path(), &new), Err(FieldError::WrongPassphrase)));
        assert_eq!(unlock(dir.path(), &old).unwrap().0 .0, key.0);
        remove_stale(dir.path()).unwrap();
        assert!(!dir.path().join(HEADER_NEW).exists(), "the stale header is gone");
        remove_stale(dir.path()).unwrap();
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let key = DataKey(Zeroizing::new([9; 32]));
        let (db, ev) = (key.db_key(), key.evidence_keys());
        assert_ne!(db.0, ev.seal);
        assert_ne!(ev.seal, ev.name);
        assert_ne!(&db.0[..], &key.0[..]);
        assert!(db.pragma().starts_with("PRAGMA key = \"x'"));
    }

    #[test]
    fn short_new_passphrases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(create(dir.path(), &Passphrase::new("1234567"), &cheap()), Err(FieldError::Invalid(_))));
        assert!(!exists(dir.path()));
        assert!(KdfParams { memory_kib: 1024, ..cheap() }.argon2().is_err());
    }

    #[test]
    fn a_passphrase_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "kuda lumping\r\nsecond line\n").unwrap();
        assert_eq!(Passphrase::from_file(&f).unwrap().bytes(), b"kuda lumping");
        assert_eq!(format!("{:?}", Passphrase::new("secret words")), "Passphrase(…)");
    }
}
