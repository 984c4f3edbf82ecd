//! The service with the real face pipeline, over loopback HTTP: concrexit's WebP thumbnails
//! (`large` album photos as `photo` sources, `medium` reference faces as `reference` sources)
//! are downloaded, encoded and posted, and every posted encoding matches the original service's
//! output (`seed_encodings`) within 0.01 per value.

use crate::common;

use std::sync::Arc;
use std::time::Instant;

use crate::service_support::*;
use candle_core::Device;
use concrexit_facedetection::pipeline::{EncodeOptions, FacePipeline, PhotoEncoder};
use concrexit_facedetection::service::{Outcome, Payload, Service, SourceType};
use concrexit_facedetection::weights::WeightsLocation;
use serde_json::json;

/// The largest difference of one value allowed against the original's encodings.
const TOLERANCE: f32 = 1e-5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webp_photos_and_references_match_the_original_encodings() {
    let cases: Vec<_> = common::reference_cases()
        .into_iter()
        .filter(|case| !case.name.contains("/orig/"))
        .filter_map(|case| case.source_image().map(|image| (case, image)))
        .collect();
    assert!(cases.len() >= 2, "no WebP reference cases");

    let (photos, photo_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    let mut sources = Vec::new();
    for (pk, (case, image)) in cases.iter().enumerate() {
        let kind = if case.name.contains("/medium/") {
            "reference"
        } else {
            "photo"
        };
        let name = format!("{pk}.webp");
        photos.add(&name, std::fs::read(image).unwrap());
        let token = format!("token-{pk}");
        receiver.expect(kind, pk as u64, &token);
        sources.push(source(
            pk as u64,
            kind,
            &format!("{photo_base}/photo/{name}"),
            &token,
        ));
    }
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();

    let weights = WeightsLocation::discover().unwrap();
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).unwrap();
    let encoder = PhotoEncoder::new(Arc::new(pipeline), EncodeOptions::default());
    let service = Service::new(Arc::new(encoder), fast_config()).unwrap();
    let started = Instant::now();
    let report = service.run(&payload).await;
    let elapsed = started.elapsed();
    assert_eq!(report.failed, 0, "{}", report.failure_summary());

    let mut worst = 0f32;
    let mut faces = 0;
    for ((case, _), source) in cases.iter().zip(&report.sources) {
        let kind = source.kind.as_str();
        let expected = &case.reference.seed_encodings;
        assert!(
            matches!(source.outcome, Outcome::Posted { faces } if faces == expected.len()),
            "{}: {:?}, expected {} faces",
            case.name,
            source.outcome,
            expected.len()
        );
        assert_eq!(
            source.kind == SourceType::Reference,
            case.name.contains("/medium/")
        );
        let delivered = receiver.delivered(kind, source.pk).unwrap();
        assert_eq!(delivered.len(), expected.len(), "{}", case.name);
        for (i, (got, want)) in delivered.iter().zip(expected).enumerate() {
            let diff = got
                .iter()
                .zip(want)
                .map(|(g, w)| (*g as f32 - w).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= TOLERANCE,
                "{} face {i}: max difference {diff}",
                case.name
            );
            worst = worst.max(diff);
        }
        faces += expected.len();
    }
    println!(
        "{} WebP photos, {faces} faces, in {elapsed:?}; largest difference from the original's \
         encodings: {worst:.2e}",
        cases.len()
    );
}
