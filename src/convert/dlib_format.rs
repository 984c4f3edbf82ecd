//! Reader for dlib's binary serialization format (dlib/serialize.h).
//!
//! dlib writes integers as a control byte (bit 7: negative, low nibble: byte count)
//! followed by little-endian magnitude bytes, floats as an integer mantissa and exponent
//! (`float_details`), bools as the characters '1'/'0', strings as a length and raw bytes,
//! matrices as (-rows, -cols) and their elements in row-major order, and DNN tensors
//! (`resizable_tensor`, version 2) as four dimensions and raw little-endian f32s. The model
//! converters in [`crate::convert`] build on these primitives.

use crate::error::FormatError;

/// A cursor over the bytes of a dlib-serialized file.
pub struct DlibReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

/// A dlib DNN tensor: (num_samples, k, nr, nc) dimensions and row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct DlibTensor {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// A dlib `matrix<float>` in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct DlibMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

type Result<T> = std::result::Result<T, FormatError>;

impl<'a> DlibReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Byte offset of the next read, for error messages.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn is_at_end(&self) -> bool {
        self.position == self.bytes.len()
    }

    pub fn error(&self, message: impl Into<String>) -> FormatError {
        FormatError::Invalid {
            offset: self.position,
            message: message.into(),
        }
    }

    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len())
            // Built only on failure: this runs for every byte group of a 100 MB model.
            .ok_or_else(|| FormatError::Truncated {
                offset: self.position,
                what: what.to_string(),
            })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn peek_byte(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    /// A signed or unsigned integer in dlib's variable-length encoding.
    pub fn read_int(&mut self) -> Result<i64> {
        let control = self.take(1, "integer")?[0];
        let negative = control & 0x80 != 0;
        let size = (control & 0x0F) as usize;
        if size == 0 || size > 8 || control & 0x70 != 0 {
            return Err(self.error(format!("invalid integer control byte {control:#04x}")));
        }
        let magnitude = self
            .take(size, "integer")?
            .iter()
            .rev()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte));
        let value = i64::try_from(magnitude)
            .map_err(|_| self.error(format!("integer {magnitude} out of range")))?;
        Ok(if negative { -value } else { value })
    }

    /// A non-negative integer used as a count or index.
    pub fn read_usize(&mut self) -> Result<usize> {
        let value = self.read_int()?;
        usize::try_from(value).map_err(|_| self.error(format!("expected a count, found {value}")))
    }

    /// A floating-point number (`float_details`: mantissa * 2^exponent).
    pub fn read_f64(&mut self) -> Result<f64> {
        if self.peek_byte().is_some_and(|byte| byte & 0x70 != 0) {
            return Err(self.error("floating-point number in dlib's old ASCII format"));
        }
        let mantissa = self.read_int()?;
        let exponent = self.read_int()?;
        const IS_INF: i64 = 32000;
        const IS_NINF: i64 = 32001;
        const IS_NAN: i64 = 32002;
        Ok(match exponent {
            IS_INF => f64::INFINITY,
            IS_NINF => f64::NEG_INFINITY,
            IS_NAN => f64::NAN,
            _ if (-32768..IS_INF).contains(&exponent) => {
                mantissa as f64 * 2f64.powi(exponent as i32)
            }
            _ => return Err(self.error(format!("invalid float exponent {exponent}"))),
        })
    }

    pub fn read_f32(&mut self) -> Result<f32> {
        Ok(self.read_f64()? as f32)
    }

    /// A raw byte (dlib's serialization of `char` and `uint8_t`).
    pub fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "byte")?[0])
    }

    pub fn read_bool(&mut self) -> Result<bool> {
        match self.take(1, "bool")?[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => Err(self.error(format!("invalid bool byte {other:#04x}"))),
        }
    }

    pub fn read_string(&mut self) -> Result<String> {
        let length = self.read_usize()?;
        if length > self.bytes.len() - self.position {
            return Err(FormatError::Truncated {
                offset: self.position,
                what: "string".to_string(),
            });
        }
        let bytes = self.take(length, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    /// Reads a string and checks that it is the expected layer or object tag.
    pub fn expect_string(&mut self, expected: &str) -> Result<()> {
        let start = self.position;
        let found = self.read_string()?;
        if found == expected {
            Ok(())
        } else {
            Err(FormatError::Unexpected {
                offset: start,
                expected: expected.to_string(),
                found,
            })
        }
    }

    /// Reads an integer and checks it against the expected value (a version or a constant).
    pub fn expect_int(&mut self, expected: i64, what: &str) -> Result<()> {
        let start = self.position;
        let found = self.read_int()?;
        if found == expected {
            Ok(())
        } else {
            Err(FormatError::Unexpected {
                offset: start,
                expected: format!("{what} {expected}"),
                found: found.to_string(),
            })
        }
    }

    /// A `dlib::matrix` of floats, in either the old (positive) or new (negated) size format.
    pub fn read_matrix(&mut self) -> Result<DlibMatrix> {
        let rows = self.read_int()?.unsigned_abs() as usize;
        let cols = self.read_int()?.unsigned_abs() as usize;
        let count = rows
            .checked_mul(cols)
            .filter(|&count| count <= self.bytes.len() - self.position)
            .ok_or_else(|| self.error(format!("matrix of {rows}x{cols} does not fit the file")))?;
        let data = (0..count)
            .map(|_| self.read_f32())
            .collect::<Result<Vec<_>>>()?;
        Ok(DlibMatrix { rows, cols, data })
    }

    /// A DNN `resizable_tensor` (version 2: dimensions, then raw little-endian f32s).
    pub fn read_tensor(&mut self) -> Result<DlibTensor> {
        self.expect_int(2, "tensor version")?;
        let mut shape = [0usize; 4];
        for dim in &mut shape {
            *dim = self.read_usize()?;
        }
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
            .filter(|&count| count.saturating_mul(4) <= self.bytes.len() - self.position)
            .ok_or_else(|| {
                self.error(format!("tensor of shape {shape:?} does not fit the file"))
            })?;
        let data = self
            .take(count * 4, "tensor data")?
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        Ok(DlibTensor { shape, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_in_dlib_encoding() {
        // 0x01 0x05 = 5; 0x82 0x34 0x12 = -0x1234
        let bytes = [0x01, 0x05, 0x82, 0x34, 0x12];
        let mut reader = DlibReader::new(&bytes);
        assert_eq!(reader.read_int().unwrap(), 5);
        assert_eq!(reader.read_int().unwrap(), -0x1234);
        assert!(reader.is_at_end());
    }

    #[test]
    fn reads_float_details() {
        // 3 * 2^-1 = 1.5: mantissa 3, exponent -1
        let bytes = [0x01, 0x03, 0x81, 0x01];
        assert_eq!(DlibReader::new(&bytes).read_f64().unwrap(), 1.5);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = [0x02, 0x05];
        assert!(matches!(
            DlibReader::new(&bytes).read_int(),
            Err(FormatError::Truncated { .. })
        ));
    }
}
