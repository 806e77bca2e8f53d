//! Evidence files, stored by their SHA-256 under `<data-dir>/blobs/ab/abcd…`: no file
//! name, extension or folder says what a photo shows or where it was taken.
//!
//! Files are streamed in (never loaded whole), hashed on the way, synced to disk, then
//! re-read and checked against the digest before the op that cites them is written.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sidak_core::hash::Sha256Digest;

use crate::error::FieldError;

const BUF: usize = 64 * 1024;

/// The content-addressed store under a data directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// The store under `data_dir`.
    pub fn new(data_dir: &Path) -> Blobs {
        Blobs { root: data_dir.join("blobs") }
    }

    /// Where a blob lives.
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// True when the blob is stored.
    pub fn has(&self, digest: &Sha256Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Streams `source` into the store and returns its digest and size. Storing the
    /// same content twice keeps one copy.
    pub fn put_file(&self, source: &Path) -> Result<(Sha256Digest, u64), FieldError> {
        let mut input = File::open(source).map_err(|e| FieldError::ReadFile { path: source.to_owned(), source: e })?;
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| io(&tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let result = self.stream_into(&mut input, source, &tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn stream_into(&self, input: &mut File, source: &Path, tmp: &Path) -> Result<(Sha256Digest, u64), FieldError> {
        let mut out = File::create(tmp).map_err(|e| io(tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(|e| FieldError::ReadFile { path: source.to_owned(), source: e })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| io(tmp, e))?;
            size += n as u64;
        }
        out.sync_all().map_err(|e| io(tmp, e))?;
        drop(out);
        let digest = Sha256Digest(hasher.finalize().into());
        let (actual, _) = hash_file(tmp)?;
        if actual != digest {
            return Err(FieldError::Corrupt(format!(
                "evidence copy of {} does not match what was read (disk error?)",
                source.display()
            )));
        }
        let dest = self.path(&digest);
        let parent = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        if dest.is_file() {
            fs::remove_file(tmp).map_err(|e| io(tmp, e))?;
        } else {
            fs::rename(tmp, &dest).map_err(|e| io(&dest, e))?;
            sync_dir(parent)?;
        }
        Ok((digest, size))
    }

    /// Reads `len` bytes at `offset` of a stored blob (for chunked uploads).
    pub fn read_chunk(&self, digest: &Sha256Digest, offset: u64, len: usize) -> Result<Vec<u8>, FieldError> {
        use std::io::{Seek, SeekFrom};
        let path = self.path(digest);
        let mut f = File::open(&path).map_err(|e| FieldError::ReadFile { path: path.clone(), source: e })?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| FieldError::ReadFile { path: path.clone(), source: e })?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf).map_err(|e| FieldError::ReadFile { path: path.clone(), source: e })?;
        Ok(buf)
    }

    /// Deletes a stored blob (only once the centre holds it; see `prune`).
    pub fn remove(&self, digest: &Sha256Digest) -> Result<(), FieldError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }
}

/// SHA-256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(Sha256Digest, u64), FieldError> {
    let mut f = File::open(path).map_err(|e| FieldError::ReadFile { path: path.to_owned(), source: e })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| FieldError::ReadFile { path: path.to_owned(), source: e })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), size))
}

fn io(path: &Path, source: std::io::Error) -> FieldError {
    FieldError::Io { path: path.to_owned(), source }
}

fn sync_dir(dir: &Path) -> Result<(), FieldError> {
    // A rename is durable only once its directory is synced.
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_content_once_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        let src = dir.path().join("IMG_0001 Disdukcapil.jpg");
        fs::write(&src, vec![7u8; 200_000]).unwrap();
        let (digest, size) = blobs.put_file(&src).unwrap();
        assert_eq!(size, 200_000);
        assert_eq!(hash_file(&blobs.path(&digest)).unwrap().0, digest);
        let name = blobs.path(&digest).file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, digest.to_hex(), "the stored name is the digest, nothing else");
        let (again, _) = blobs.put_file(&src).unwrap();
        assert_eq!(again, digest);
        assert!(fs::read_dir(dir.path().join("blobs/tmp")).unwrap().next().is_none(), "no temporary file left");
        assert_eq!(blobs.read_chunk(&digest, 199_990, 100).unwrap().len(), 10);
    }
}
