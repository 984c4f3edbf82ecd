use concrexit_facedetection::decode::{DecodeLimits, open_image};
fn main() {
    for set in ["pkg", "repo"] {
        for variant in ["orig", "large", "medium"] {
            let images = format!("../shared/reference/{set}/images/{variant}");
            let Ok(rd) = std::fs::read_dir(&images) else {
                continue;
            };
            let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let stem = p.file_stem().unwrap().to_str().unwrap();
                let dec = format!("../shared/reference/{set}/{variant}/{stem}/decoded.png");
                let ours = match open_image(&p, &DecodeLimits::default()) {
                    Ok(i) => i,
                    Err(e) => {
                        println!("{}: ERR {e}", p.display());
                        continue;
                    }
                };
                let theirs = image::open(&dec).unwrap().to_rgb8();
                if ours.dimensions() != theirs.dimensions() {
                    println!(
                        "{}: dims {:?} vs {:?}",
                        p.display(),
                        ours.dimensions(),
                        theirs.dimensions()
                    );
                    continue;
                }
                let (mut sum, mut max, mut n_diff) = (0u64, 0u8, 0usize);
                for (a, b) in ours.as_raw().iter().zip(theirs.as_raw()) {
                    let d = a.abs_diff(*b);
                    sum += d as u64;
                    max = max.max(d);
                    if d > 0 {
                        n_diff += 1
                    }
                }
                println!(
                    "{set}/{variant}/{stem}: mean {:.4} max {} differing {:.2}%",
                    sum as f64 / ours.as_raw().len() as f64,
                    max,
                    100.0 * n_diff as f64 / ours.as_raw().len() as f64
                );
            }
        }
    }
}
