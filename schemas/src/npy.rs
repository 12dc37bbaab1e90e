//! Streaming reader of NumPy `.npy` files: 1-d or 2-d, C order, little
//! endian, float or integer. Rows are read one at a time, so memory stays
//! constant whatever the file's size.

use std::io::{self, Read};

/// Element types this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I32,
    I64,
    U32,
    U64,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Self> {
        Some(match descr {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "<u4" => Dtype::U32,
            "<u8" => Dtype::U64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }
}

/// The header of a `.npy` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub rows: u64,
    /// Values per row; 1 for a 1-d array.
    pub cols: usize,
    /// Where the data starts, in bytes from the start of the file.
    pub data_offset: u64,
}

impl Header {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        (self.cols * self.dtype.size()) as u64
    }

    /// The file size the header promises.
    pub fn file_len(&self) -> u64 {
        self.data_offset + self.rows * self.row_bytes()
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads and checks the header, leaving `r` at the first row.
pub fn read_header(r: &mut impl Read) -> io::Result<Header> {
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix)
        .map_err(|_| invalid("not a .npy file (too short)"))?;
    if &prefix[..6] != b"\x93NUMPY" {
        return Err(invalid("not a .npy file (bad magic)"));
    }
    let (header_len, start) = match prefix[6] {
        1 => {
            let mut n = [0u8; 2];
            r.read_exact(&mut n)?;
            (u16::from_le_bytes(n) as usize, 10)
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            r.read_exact(&mut n)?;
            (u32::from_le_bytes(n) as usize, 12)
        }
        v => return Err(invalid(format!("unsupported .npy version {v}"))),
    };
    if header_len > 1 << 20 {
        return Err(invalid(format!(
            "header of {header_len} bytes is implausible"
        )));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)
        .map_err(|_| invalid("truncated header"))?;
    let header = String::from_utf8(header).map_err(|_| invalid("header is not text"))?;
    let field = |name: &str| {
        header
            .split(&format!("'{name}':"))
            .nth(1)
            .map(str::trim_start)
            .ok_or_else(|| invalid(format!("header has no {name}")))
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .unwrap_or_default();
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        invalid(format!(
            "element type {descr:?} is not supported (little-endian f4, f8, i4, i8, u4 or u8)"
        ))
    })?;
    if field("fortran_order")?.starts_with("True") {
        return Err(invalid(
            "Fortran-order arrays are not supported; save in C order",
        ));
    }
    let shape = field("shape")?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| invalid("shape is not a tuple"))?;
    let dims: Vec<u64> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| invalid(format!("bad shape ({shape})")))
        })
        .collect::<Result<_, _>>()?;
    let (rows, cols) = match dims[..] {
        [rows] => (rows, 1),
        [rows, cols] => (
            rows,
            usize::try_from(cols).map_err(|_| invalid("too many columns"))?,
        ),
        _ => {
            return Err(invalid(format!(
                "expected a 1-d or 2-d array, got shape ({shape})"
            )));
        }
    };
    // A vector of more values than this is no embedding; bounding a row
    // keeps a hostile header from asking for memory it will never fill.
    if cols == 0 || cols > MAX_COLS {
        return Err(invalid(format!(
            "{cols} values a row (shape ({shape})): expected 1 to {MAX_COLS}"
        )));
    }
    let header = Header {
        dtype,
        rows,
        cols,
        data_offset: (start + header_len) as u64,
    };
    // Every size computed from the header then fits in a u64.
    rows.checked_mul(header.row_bytes())
        .and_then(|data| data.checked_add(header.data_offset))
        .ok_or_else(|| invalid(format!("shape ({shape}) is larger than any file")))?;
    Ok(header)
}

/// Most values a row may hold.
pub const MAX_COLS: usize = 1 << 20;

/// A whole `.npy` file (format 1.0) holding `data`, little-endian values of
/// `dtype` in C order, of the given shape.
pub fn to_bytes(dtype: Dtype, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let descr = match dtype {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::U32 => "<u4",
        Dtype::U64 => "<u8",
    };
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // NumPy pads the header with spaces so the data starts 64-byte aligned.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Reads one row of a float array into `out` as f32.
pub fn read_f32_row(
    r: &mut impl Read,
    h: &Header,
    buf: &mut Vec<u8>,
    out: &mut Vec<f32>,
) -> io::Result<()> {
    if !h.dtype.is_float() {
        return Err(invalid("expected a float array"));
    }
    read_row(r, h, buf)?;
    out.clear();
    match h.dtype {
        Dtype::F64 => {
            out.extend(buf.chunks_exact(8).map(|b| {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }))
        }
        _ => out.extend(
            buf.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
    }
    Ok(())
}

/// Reads the next value of a 1-d integer array. Negative values are an error.
pub fn read_u64(r: &mut impl Read, h: &Header, buf: &mut Vec<u8>) -> io::Result<u64> {
    if h.cols != 1 {
        return Err(invalid(format!(
            "expected a 1-d array of ids, got {} values a row",
            h.cols
        )));
    }
    read_row(r, h, buf)?;
    let b = &buf[..];
    let value = match h.dtype {
        Dtype::U64 => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        Dtype::U32 => u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::I64 => {
            let v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            u64::try_from(v).map_err(|_| invalid(format!("negative id {v}")))?
        }
        Dtype::I32 => {
            let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            u64::try_from(v).map_err(|_| invalid(format!("negative id {v}")))?
        }
        Dtype::F32 | Dtype::F64 => return Err(invalid("expected an integer array of ids")),
    };
    Ok(value)
}

fn read_row(r: &mut impl Read, h: &Header, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(h.row_bytes() as usize, 0);
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("the file ends in the middle of a row (truncated)"),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_of_floats_and_integer_ids() {
        let data: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let file = to_bytes(Dtype::F32, &[2, 2], &data);
        let mut r = &file[..];
        let h = read_header(&mut r).unwrap();
        assert_eq!((h.rows, h.cols, h.file_len()), (2, 2, file.len() as u64));
        let (mut buf, mut row) = (Vec::new(), Vec::new());
        read_f32_row(&mut r, &h, &mut buf, &mut row).unwrap();
        assert_eq!(row, [1.5, -2.0]);
        read_f32_row(&mut r, &h, &mut buf, &mut row).unwrap();
        assert_eq!(row, [0.25, 8.0]);
        let err = read_f32_row(&mut r, &h, &mut buf, &mut row).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        let ids = to_bytes(
            Dtype::I64,
            &[2],
            &[7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat(),
        );
        let mut r = &ids[..];
        let h = read_header(&mut r).unwrap();
        assert_eq!(read_u64(&mut r, &h, &mut buf).unwrap(), 7);
        assert!(
            read_u64(&mut r, &h, &mut buf)
                .unwrap_err()
                .to_string()
                .contains("negative id -1")
        );
        let pairs = to_bytes(Dtype::I64, &[1, 2], &[0; 16]);
        let mut r = &pairs[..];
        let h = read_header(&mut r).unwrap();
        let err = read_u64(&mut r, &h, &mut buf).unwrap_err();
        assert!(err.to_string().contains("1-d array of ids"), "{err}");
    }

    /// A float32 file's header claiming another element type.
    fn with_descr(file: Vec<u8>, descr: &str) -> Vec<u8> {
        let text = String::from_utf8_lossy(&file[10..]).replace("<f4", descr);
        [&file[..10], text.as_bytes()].concat()
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (file, message) in [
            (b"PK\x03\x04 not npy".to_vec(), "bad magic"),
            (
                with_descr(to_bytes(Dtype::F32, &[2, 2], &[]), "<c8"),
                "\"<c8\" is not supported",
            ),
            (to_bytes(Dtype::F32, &[2, 2, 2], &[]), "1-d or 2-d"),
            (
                to_bytes(Dtype::F32, &[2, 2], &[])[..20].to_vec(),
                "truncated header",
            ),
            // What the fuzz target found: rows of no values, rows larger
            // than memory, and a file larger than any.
            (to_bytes(Dtype::I64, &[3, 0], &[]), "0 values a row"),
            (to_bytes(Dtype::F64, &[1, 1 << 40], &[]), "values a row"),
            (
                to_bytes(Dtype::F64, &[u64::MAX, 1024], &[]),
                "larger than any file",
            ),
        ] {
            let err = read_header(&mut &file[..]).unwrap_err();
            assert!(
                err.to_string().contains(message),
                "{err} should say {message}"
            );
        }
    }
}
