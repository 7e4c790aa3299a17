//! The result of checking an image.

use serde::Serialize;
use std::path::Path;

/// One thing wrong with an image.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The structure concerned ("footer", "dynamic header", "BAT", "file size").
    pub structure: String,
    /// What is wrong.
    pub message: String,
}

/// Everything `img check` found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// The image file.
    pub file: String,
    /// Its format.
    pub format: &'static str,
    /// Whether no problem was found.
    pub clean: bool,
    /// Problems: each makes the image corrupt.
    pub problems: Vec<Problem>,
    /// Observations that do not make the image corrupt.
    pub notes: Vec<String>,
    /// The virtual size, when the footer could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Allocated blocks, for block-based formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_blocks: Option<u64>,
}

impl CheckReport {
    /// An empty (clean) report.
    pub fn new(path: &Path, format: &'static str) -> CheckReport {
        CheckReport {
            file: path.display().to_string(),
            format,
            clean: true,
            problems: Vec::new(),
            notes: Vec::new(),
            virtual_size: None,
            allocated_blocks: None,
        }
    }

    /// Records a problem.
    pub fn problem(&mut self, structure: &str, message: impl Into<String>) {
        self.clean = false;
        self.problems.push(Problem {
            structure: structure.into(),
            message: message.into(),
        });
    }

    /// Records a note.
    pub fn note(&mut self, message: impl Into<String>) {
        self.notes.push(message.into());
    }
}
