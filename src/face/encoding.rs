//! A face encoding: dlib's 128-number face descriptor, the one type that carries it from the
//! embedder to the JSON body concrexit receives (`{"encodings": [[128 floats], ...]}`).

use std::ops::Deref;

use serde::ser::{Serialize, SerializeTuple, Serializer};

/// Length of a face encoding (dlib's face descriptor).
pub const ENCODING_LEN: usize = 128;

/// A face encoding: 128 numbers, two faces being the same person when the Euclidean distance
/// between their encodings is small (face_recognition's tolerance is 0.6, concrexit's 0.49).
/// Serialises as a JSON array of its 128 numbers; reads as a slice of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding([f32; ENCODING_LEN]);

impl Encoding {
    /// The 128 numbers.
    pub fn as_array(&self) -> &[f32; ENCODING_LEN] {
        &self.0
    }

    /// Whether every number is finite (concrexit stores nothing else).
    pub fn is_finite(&self) -> bool {
        self.0.iter().all(|x| x.is_finite())
    }

    /// The Euclidean distance to `other`, the distance concrexit and face_recognition compare
    /// with their tolerance.
    pub fn distance(&self, other: &Encoding) -> f32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt()
    }
}

impl From<[f32; ENCODING_LEN]> for Encoding {
    fn from(values: [f32; ENCODING_LEN]) -> Self {
        Self(values)
    }
}

impl Deref for Encoding {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Encoding {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Encoding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut values = serializer.serialize_tuple(ENCODING_LEN)?;
        for value in &self.0 {
            values.serialize_element(value)?;
        }
        values.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_a_plain_array_of_its_numbers() {
        let mut values = [0f32; ENCODING_LEN];
        values[0] = -0.125;
        values[127] = 1.0e-7;
        let json = serde_json::to_string(&Encoding::from(values)).unwrap();
        assert_eq!(json, serde_json::to_string(&values.to_vec()).unwrap());
    }

    #[test]
    fn distance_is_euclidean() {
        let a = Encoding::from([0.0; ENCODING_LEN]);
        let mut values = [0.0; ENCODING_LEN];
        values[3] = 3.0;
        values[9] = 4.0;
        assert_eq!(a.distance(&Encoding::from(values)), 5.0);
        assert!(!Encoding::from([f32::NAN; ENCODING_LEN]).is_finite());
    }
}
