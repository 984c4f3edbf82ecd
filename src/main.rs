//! The `facedetect` command-line tool.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "facedetect",
    version,
    about = "Face detection and dlib-compatible face encodings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a dlib model file (.dat, .svm) into safetensors.
    ConvertDlib {
        /// The dlib model file.
        input: PathBuf,
        /// Where to write the safetensors file.
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ConvertDlib { input, output } => {
            let kind = concrexit_facedetection::convert::convert_file(&input, &output)
                .with_context(|| format!("converting {}", input.display()))?;
            eprintln!(
                "{}: {kind} model written to {}",
                input.display(),
                output.display()
            );
        }
    }
    Ok(())
}
