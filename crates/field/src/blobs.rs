//! Evidence files, encrypted, under `<data-dir>/blobs/ab/abcd…`. A file is known by the
//! SHA-256 of its plaintext (what the protocol names it by), but stored under an HMAC
//! of that digest keyed by the device: no file name, extension or folder says what a
//! photo shows, and without the passphrase a name cannot even be matched against the
//! digest of a photo someone already has.
//!
//! A stored file is sealed with XChaCha20-Poly1305 in 64 KiB segments, the STREAM
//! construction: each segment's nonce is the file's random prefix, the segment's index
//! and a last-segment flag, so segments cannot be reordered, dropped or cut off
//! unnoticed; every segment is bound to the plaintext digest, so files cannot be
//! swapped. The plaintext is preceded by its length and padded (Padmé, then to whole
//! segments), so the size on disk hints only roughly at the photo's.
//!
//! Files are streamed in and out a segment at a time, never loaded whole. A photo is
//! read twice on the way in (hashed, then sealed while hashed again), synced to disk,
//! then decrypted and checked against its digest before the op that cites it is written.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::Mac;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sidak_core::hash::Sha256Digest;

use crate::error::FieldError;
use crate::keys::EvidenceKeys;

const BUF: usize = 64 * 1024;
/// Plaintext bytes per segment.
const SEGMENT: usize = 64 * 1024;
/// A sealed segment: its ciphertext and tag.
const SEALED_SEGMENT: usize = SEGMENT + 16;
/// The sealed-file format.
const VERSION: u8 = 1;
/// The file header: the version and the random nonce prefix.
const HEADER: usize = 1 + PREFIX;
const PREFIX: usize = 19;
/// The plaintext length, before the content.
const LENGTH: usize = 8;

/// The encrypted, content-addressed store under a data directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
    keys: EvidenceKeys,
}

impl Blobs {
    /// The store under `data_dir`, with the device's evidence keys.
    pub(crate) fn new(data_dir: &Path, keys: EvidenceKeys) -> Blobs {
        Blobs { root: data_dir.join("blobs"), keys }
    }

    /// Where a blob lives: named by the HMAC of its digest, not by the digest.
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let mut mac =
            <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.keys.name[..]).expect("HMAC takes any key length");
        mac.update(&digest.0);
        let name = hex::encode(mac.finalize().into_bytes());
        self.root.join(&name[..2]).join(name)
    }

    /// True when the blob is stored.
    pub fn has(&self, digest: &Sha256Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Streams `source` into the store, encrypted, and returns its digest and size.
    /// Storing the same content twice keeps one copy.
    pub fn put_file(&self, source: &Path) -> Result<(Sha256Digest, u64), FieldError> {
        let (digest, size) = hash_file(source)?;
        let dest = self.path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| io(&tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("{}.part", hex::encode(rand::random::<[u8; 16]>())));
        let result = self.seal(source, &digest, size, &tmp).and_then(|()| {
            let stored = self.hash_sealed(&tmp, &digest)?;
            if stored != (digest, size) {
                return Err(FieldError::Corrupt(format!(
                    "evidence copy of {} does not match what was read (disk error?)",
                    source.display()
                )));
            }
            let parent = dest.parent().expect("blob paths have a parent");
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
            sync_dir(parent)
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| (digest, size))
    }

    /// Encrypts `source` (of `size` bytes, hashing to `digest`) into `tmp`, checking on
    /// the way that it still is what was hashed.
    fn seal(&self, source: &Path, digest: &Sha256Digest, size: u64, tmp: &Path) -> Result<(), FieldError> {
        let read_err = |e| FieldError::ReadFile { path: source.to_owned(), source: e };
        let mut input = File::open(source).map_err(read_err)?;
        let mut out = File::create(tmp).map_err(|e| io(tmp, e))?;
        let mut header = [0u8; HEADER];
        header[0] = VERSION;
        rand::rngs::OsRng.fill_bytes(&mut header[1..]);
        out.write_all(&header).map_err(|e| io(tmp, e))?;
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.keys.seal[..]));
        let aad = associated_data(&header, digest);
        let segments = padded_len(LENGTH as u64 + size) / SEGMENT as u64;
        if segments > u64::from(u32::MAX) {
            return Err(FieldError::Invalid(format!("{} is too large to store (256 TiB at most)", source.display())));
        }
        let mut hasher = Sha256::new();
        let mut seen = 0u64;
        let mut segment = zeroize::Zeroizing::new(vec![0u8; SEGMENT]);
        for index in 0..segments {
            let start = if index == 0 {
                segment[..LENGTH].copy_from_slice(&size.to_le_bytes());
                LENGTH
            } else {
                0
            };
            let n = fill(&mut input, &mut segment[start..]).map_err(read_err)?;
            hasher.update(&segment[start..start + n]);
            seen += n as u64;
            segment[start + n..].fill(0);
            let last = index + 1 == segments;
            let tag = cipher
                .encrypt_in_place_detached(&nonce(&header, index, last), &aad, &mut segment[..])
                .map_err(|_| FieldError::Corrupt("a segment could not be sealed".into()))?;
            out.write_all(&segment).and_then(|_| out.write_all(&tag)).map_err(|e| io(tmp, e))?;
        }
        let grew = input.read(&mut [0u8; 1]).map_err(read_err)? > 0;
        if grew || seen != size || Sha256Digest(hasher.finalize().into()) != *digest {
            return Err(FieldError::Invalid(format!(
                "{} changed while it was being stored; attach it again once it is complete",
                source.display()
            )));
        }
        out.sync_all().map_err(|e| io(tmp, e))
    }

    /// Opens a stored blob for reading its plaintext.
    pub fn open(&self, digest: &Sha256Digest) -> Result<BlobReader, FieldError> {
        BlobReader::open(&self.keys, self.path(digest), digest)
    }

    /// Reads `len` bytes at `offset` of a stored blob's plaintext (for chunked uploads).
    pub fn read_chunk(&self, digest: &Sha256Digest, offset: u64, len: usize) -> Result<Vec<u8>, FieldError> {
        let mut reader = self.open(digest)?;
        reader.seek_to(offset);
        let mut buf = Vec::with_capacity(len.min(reader.size() as usize));
        let path = reader.path.clone();
        (&mut reader).take(len as u64).read_to_end(&mut buf).map_err(|e| read_error(&path, e))?;
        Ok(buf)
    }

    /// A stored blob's plaintext, whole, in memory (for tests and small files).
    pub fn read_all(&self, digest: &Sha256Digest) -> Result<Vec<u8>, FieldError> {
        let mut reader = self.open(digest)?;
        let mut buf = Vec::with_capacity(reader.size() as usize);
        let path = reader.path.clone();
        reader.read_to_end(&mut buf).map_err(|e| read_error(&path, e))?;
        Ok(buf)
    }

    /// SHA-256 and size of a stored blob's plaintext, streamed.
    pub fn hash_stored(&self, digest: &Sha256Digest) -> Result<(Sha256Digest, u64), FieldError> {
        self.hash_sealed(&self.path(digest), digest)
    }

    fn hash_sealed(&self, path: &Path, digest: &Sha256Digest) -> Result<(Sha256Digest, u64), FieldError> {
        let mut reader = BlobReader::open(&self.keys, path.to_owned(), digest)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = reader.read(&mut buf).map_err(|e| read_error(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok((Sha256Digest(hasher.finalize().into()), reader.size()))
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

/// A stored blob's plaintext, decrypted a segment at a time as it is read.
pub struct BlobReader {
    file: File,
    path: PathBuf,
    cipher: XChaCha20Poly1305,
    header: [u8; HEADER],
    aad: [u8; HEADER + 32],
    segments: u64,
    size: u64,
    pos: u64,
    segment: zeroize::Zeroizing<Vec<u8>>,
    loaded: Option<u64>,
}

impl BlobReader {
    fn open(keys: &EvidenceKeys, path: PathBuf, digest: &Sha256Digest) -> Result<BlobReader, FieldError> {
        let mut file = File::open(&path).map_err(|e| FieldError::ReadFile { path: path.clone(), source: e })?;
        let len = file.metadata().map_err(|e| FieldError::ReadFile { path: path.clone(), source: e })?.len();
        let damaged = || FieldError::DamagedEvidence { path: path.clone() };
        let body = len.checked_sub(HEADER as u64).ok_or_else(damaged)?;
        if body == 0 || body % SEALED_SEGMENT as u64 != 0 {
            return Err(damaged());
        }
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header).map_err(|e| read_error(&path, e))?;
        if header[0] != VERSION {
            return Err(damaged());
        }
        let mut reader = BlobReader {
            file,
            cipher: XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&keys.seal[..])),
            aad: associated_data(&header, digest),
            header,
            segments: body / SEALED_SEGMENT as u64,
            size: 0,
            pos: 0,
            segment: zeroize::Zeroizing::new(vec![0u8; SEALED_SEGMENT]),
            loaded: None,
            path,
        };
        reader.load(0).map_err(|e| read_error(&reader.path, e))?;
        let size = u64::from_le_bytes(reader.segment[..LENGTH].try_into().expect("8 bytes"));
        if size > reader.segments * SEGMENT as u64 - LENGTH as u64 {
            return Err(FieldError::DamagedEvidence { path: reader.path });
        }
        reader.size = size;
        Ok(reader)
    }

    /// The plaintext's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves to `offset` of the plaintext (at most its end).
    pub fn seek_to(&mut self, offset: u64) {
        self.pos = offset.min(self.size);
    }

    /// Decrypts segment `index` into the buffer; a failure is `InvalidData`.
    fn load(&mut self, index: u64) -> std::io::Result<()> {
        self.loaded = None;
        self.file.seek(SeekFrom::Start(HEADER as u64 + index * SEALED_SEGMENT as u64))?;
        self.file.read_exact(&mut self.segment)?;
        let (data, tag) = self.segment.split_at_mut(SEGMENT);
        let tag = Tag::clone_from_slice(tag);
        let last = index + 1 == self.segments;
        self.cipher
            .decrypt_in_place_detached(&nonce(&self.header, index, last), &self.aad, data, &tag)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a segment does not decrypt"))?;
        self.loaded = Some(index);
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let at = LENGTH as u64 + self.pos;
        let (index, within) = (at / SEGMENT as u64, (at % SEGMENT as u64) as usize);
        if self.loaded != Some(index) {
            self.load(index)?;
        }
        let n = out.len().min(SEGMENT - within).min((self.size - self.pos).min(usize::MAX as u64) as usize);
        out[..n].copy_from_slice(&self.segment[within..within + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Segment `index`'s nonce: the file's prefix, the index, and whether it is the last.
fn nonce(header: &[u8; HEADER], index: u64, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..PREFIX].copy_from_slice(&header[1..]);
    // A file has at most 2^32 segments (256 TiB; `seal` refuses more).
    n[PREFIX..PREFIX + 4].copy_from_slice(&(index as u32).to_be_bytes());
    n[23] = u8::from(last);
    XNonce::clone_from_slice(&n)
}

fn associated_data(header: &[u8; HEADER], digest: &Sha256Digest) -> [u8; HEADER + 32] {
    let mut aad = [0u8; HEADER + 32];
    aad[..HEADER].copy_from_slice(header);
    aad[HEADER..].copy_from_slice(&digest.0);
    aad
}

/// The stored plaintext length for `n` bytes: Padmé (at most ~12% more, leaking
/// O(log log n) bits of the size), then up to whole segments.
fn padded_len(n: u64) -> u64 {
    let n = n.max(1);
    let e = 63 - n.leading_zeros() as u64; // floor(log2 n)
    let s = if e == 0 { 1 } else { 64 - e.leading_zeros() as u64 }; // floor(log2 e) + 1
    let mask = (1u64 << e.saturating_sub(s)) - 1;
    let padme = (n + mask) & !mask;
    padme.div_ceil(SEGMENT as u64) * SEGMENT as u64
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A stored file that does not decrypt, or is cut short, is damaged; other failures
/// are read errors.
fn read_error(path: &Path, e: std::io::Error) -> FieldError {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            FieldError::DamagedEvidence { path: path.to_owned() }
        }
        _ => FieldError::ReadFile { path: path.to_owned(), source: e },
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
    use zeroize::Zeroizing;

    fn keys(b: u8) -> EvidenceKeys {
        EvidenceKeys { seal: Zeroizing::new([b; 32]), name: Zeroizing::new([b ^ 0x5a; 32]) }
    }

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn put(blobs: &Blobs, dir: &Path, bytes: &[u8]) -> Sha256Digest {
        let src = dir.join("IMG_0001 Disdukcapil.jpg");
        fs::write(&src, bytes).unwrap();
        let (digest, size) = blobs.put_file(&src).unwrap();
        assert_eq!(size, bytes.len() as u64);
        digest
    }

    #[test]
    fn round_trips_every_size_whole_and_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), keys(1));
        for len in
            [0, 1, SEGMENT - LENGTH - 1, SEGMENT - LENGTH, SEGMENT - LENGTH + 1, SEGMENT, 3 * SEGMENT + 5, 200_000]
        {
            let bytes = noise(len, len as u8);
            let digest = put(&blobs, dir.path(), &bytes);
            assert_eq!(blobs.read_all(&digest).unwrap(), bytes, "{len} bytes");
            assert_eq!(blobs.hash_stored(&digest).unwrap(), (digest, len as u64));
            for (offset, n) in [(0, 10), (len.saturating_sub(10), 100), (len / 2, SEGMENT + 3), (len + 5, 10)] {
                let want = &bytes[offset.min(len)..(offset + n).min(len)];
                assert_eq!(blobs.read_chunk(&digest, offset as u64, n).unwrap(), want, "{len} bytes at {offset}");
            }
        }
        assert!(fs::read_dir(dir.path().join("blobs/tmp")).unwrap().next().is_none(), "no temporary file left");
    }

    #[test]
    fn stores_once_under_a_name_that_is_not_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), keys(1));
        let bytes = noise(200_000, 7);
        let digest = put(&blobs, dir.path(), &bytes);
        let path = blobs.path(&digest);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name.len(), 64);
        assert!(!path.to_string_lossy().contains(&digest.to_hex()), "the stored name is not the digest");
        assert_ne!(Blobs::new(dir.path(), keys(2)).path(&digest), path, "another device names it otherwise");
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(put(&blobs, dir.path(), &bytes), digest);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before, "stored once");
    }

    #[test]
    fn the_file_on_disk_shows_no_plaintext_and_only_a_rounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), keys(1));
        let bytes = noise(300_001, 3);
        let digest = put(&blobs, dir.path(), &bytes);
        let raw = fs::read(blobs.path(&digest)).unwrap();
        let windows: std::collections::HashSet<&[u8]> = bytes.windows(32).collect();
        assert!(!raw.windows(32).any(|w| windows.contains(w)), "no 32-byte window of the photo");
        assert!(!raw.windows(32).any(|w| w == digest.0), "nor its digest");
        let segments = padded_len(LENGTH as u64 + 300_001) / SEGMENT as u64;
        assert_eq!(raw.len() as u64, HEADER as u64 + segments * SEALED_SEGMENT as u64);
        // Neighbouring sizes look the same on disk.
        let other = put(&blobs, dir.path(), &noise(300_100, 4));
        assert_eq!(fs::metadata(blobs.path(&other)).unwrap().len(), raw.len() as u64);
    }

    #[test]
    fn padding_is_bounded() {
        for n in [1u64, 9, 65_536, 1_000_000, 3_000_000, 40_000_000, 1 << 33] {
            let p = padded_len(n);
            assert!(p >= n && p % SEGMENT as u64 == 0);
            assert!(p <= (n + n / 8).max(SEGMENT as u64) + SEGMENT as u64, "{n} → {p}");
        }
    }

    #[test]
    fn a_damaged_cut_or_swapped_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), keys(1));
        let a = put(&blobs, dir.path(), &noise(150_000, 1));
        let b = put(&blobs, dir.path(), &noise(150_000, 2));
        let raw = fs::read(blobs.path(&a)).unwrap();
        let damaged = |bytes: &[u8]| {
            fs::write(blobs.path(&a), bytes).unwrap();
            let whole = blobs.read_all(&a);
            let tail = blobs.read_chunk(&a, 140_000, 10_000);
            assert!(matches!(whole, Err(FieldError::DamagedEvidence { .. })), "{whole:?}");
            assert!(matches!(tail, Err(FieldError::DamagedEvidence { .. })), "{tail:?}");
        };
        for at in [0, 5, 100, raw.len() - 1] {
            let mut flipped = raw.clone();
            flipped[at] ^= 0x01;
            damaged(&flipped);
        }
        damaged(&raw[..raw.len() - SEALED_SEGMENT]);
        damaged(&raw[..raw.len() - 1]);
        let mut dropped = raw[..HEADER + SEALED_SEGMENT].to_vec();
        dropped.extend_from_slice(&raw[HEADER + 2 * SEALED_SEGMENT..]);
        damaged(&dropped);
        damaged(&fs::read(blobs.path(&b)).unwrap());
        fs::write(blobs.path(&a), &raw).unwrap();
        assert_eq!(blobs.read_all(&a).unwrap(), noise(150_000, 1), "the original still reads");
        assert!(Blobs::new(dir.path(), keys(1)).open(&a).is_ok());
    }

    #[test]
    fn a_source_that_changes_while_stored_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), keys(1));
        let src = dir.path().join("growing.jpg");
        fs::write(&src, noise(100_000, 1)).unwrap();
        let (digest, size) = hash_file(&src).unwrap();
        fs::write(&src, noise(100_001, 1)).unwrap();
        let tmp = dir.path().join("t.part");
        assert!(matches!(blobs.seal(&src, &digest, size, &tmp), Err(FieldError::Invalid(_))));
    }
}
