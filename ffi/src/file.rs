//! Reading a model file with std (the std-free build has its own, in `bare`).

use crate::limits::METAREC_MAX_MODEL_BYTES;
use crate::status::{Code, Status, METAREC_ERR_IO, METAREC_ERR_MODEL_TOO_LARGE};

/// Reads a model file's bytes; any failure to open or read it is `METAREC_ERR_IO`, a file
/// larger than `METAREC_MAX_MODEL_BYTES` is `METAREC_ERR_MODEL_TOO_LARGE` (refused from its
/// size when it has one, and never read past the limit: an endless stream such as `/dev/zero`
/// stops one byte after it).
pub(crate) fn read_file(path: &[u8]) -> Status<Vec<u8>> {
    use std::io::Read as _;
    #[cfg(unix)]
    let path = {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(path))
    };
    #[cfg(not(unix))]
    let path =
        std::path::Path::new(core::str::from_utf8(path).map_err(|_| Code(crate::status::METAREC_ERR_INVALID_UTF8))?);
    let too_large = Code(METAREC_ERR_MODEL_TOO_LARGE);
    let limit = u64::try_from(METAREC_MAX_MODEL_BYTES).map_err(|_| too_large)?;
    let file = std::fs::File::open(path).map_err(|_| Code(METAREC_ERR_IO))?;
    let size = file.metadata().map_err(|_| Code(METAREC_ERR_IO))?.len();
    if size > limit {
        return Err(too_large);
    }
    let mut bytes = Vec::new();
    // `size` is a hint only (0 for pipes and devices): read at most one byte past the limit.
    bytes.try_reserve_exact(usize::try_from(size).map_err(|_| too_large)?).map_err(|_| too_large)?;
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|_| Code(METAREC_ERR_IO))?;
    if bytes.len() > METAREC_MAX_MODEL_BYTES {
        return Err(too_large);
    }
    Ok(bytes)
}
