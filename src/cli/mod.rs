//! The command line: argument definitions and dispatch. Each command is a thin wrapper over
//! library calls; `--json` output goes to stdout, everything else to stderr.
mod bench;
mod bench_clip;
#[cfg(feature = "gui")]
mod bench_curation;
mod bench_data;
mod bench_isa;
mod bench_kernels;
mod clip;
mod data;
mod device_tools;
mod map;
mod models;
mod runs;
mod values;

use anyhow::Context;
use artculture::model::autocast::{Autocast, Precision};
use artculture::model::device::DeviceKind;
use artculture::workspace::{Workspace, default_dir};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "artculture", version = artculture::build_info::VERSION, long_version = long_version(),
          about = "Tells where a painting comes from. With no command, opens the app.")]
pub struct Cli {
    /// Workspace folder (default: the platform data directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Compute device.
    #[arg(long, global = true, value_parser = values::device(), default_value = "cpu")]
    pub device: DeviceKind,
    /// Numeric precision of the networks: f32, or bf16 as PyTorch's CPU autocast computes it
    /// (README, "Precision"). A new training run stores it; CLIP commands run f32.
    #[arg(long, global = true, value_parser = values::precision(), default_value = "f32")]
    pub precision: Precision,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Images or folders to open in the app's Predict view (what "Open with artculture" passes).
    #[arg(value_name = "IMAGE|DIR")]
    pub open: Vec<PathBuf>,
}

fn long_version() -> &'static str {
    Box::leak(artculture::build_info::long_version().into_boxed_str())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import works into the workspace.
    #[command(subcommand)]
    Import(ImportCommand),
    /// The dataset's Table 1: works per culture before and after curation.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Flag a work as not a painting.
    Flag {
        /// Met Object ID, or the catalog id for works from folders.
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Clear a work's flag.
    Unflag { id: String },
    /// The works most likely to be mis-tagged non-paintings or near-duplicates, most suspicious
    /// first, with the reasons the Curation view shows (a run's model, else image statistics).
    Rank {
        /// Rank with this run's model (default: the best run; image statistics when none).
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
        /// How many works to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Compute every work's CLIP embedding (resumable; cached per image in the workspace).
    Embed(clip::EmbedArgs),
    /// The works most like the given ones (CLIP embeddings), most similar first.
    Similar(clip::SimilarArgs),
    /// The works that best match a description in words (CLIP), best first.
    Search(clip::SearchArgs),
    /// Works whose culture tag looks wrong (out-of-sample heads on CLIP embeddings, confident
    /// learning), with the suggested culture; and near-duplicates across the train/test split.
    LabelIssues(clip::LabelIssuesArgs),
    /// Undo the last curation change (from the app or the CLI).
    Undo,
    /// Redo the last undone curation change.
    Redo,
    /// Export the curated list as CSV (object id, culture, flag, reason, note).
    ExportCuration {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Train a model.
    Train(Box<runs::TrainArgs>),
    /// The runs of this workspace (the study's Table 2).
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a run on its test split.
    Eval {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Predict the culture of paintings.
    Predict(runs::PredictArgs),
    /// Join the JSON Lines of `predict --manifest --shard` tasks into one file, in manifest order.
    Merge {
        /// The manifest the shards were predicted from.
        #[arg(long, value_name = "LIST")]
        manifest: PathBuf,
        /// The merged file (written atomically).
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
        /// The shards' outputs.
        #[arg(required = true, value_name = "SHARD.jsonl")]
        shards: Vec<PathBuf>,
    },
    /// The culture map: distances, similarities, ForceAtlas2 layout, chords.
    Map {
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "OUT.png")]
        png: Option<PathBuf>,
    },
    /// Pretrained weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Run a bare backbone on a tensor (for checking numbers against other frameworks).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure speed and memory (the figures in BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Print a completion script for a shell: `artculture completions bash > /etc/bash_completion.d/artculture`.
    Completions {
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// Write a man page for artculture and each of its commands into DIR (for packaging).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// The Met's Open Access paintings, from MetObjects.csv and/or the Collection API.
    Met(data::MetImportArgs),
    /// A folder with one sub-folder of images per culture: DIR/<Culture>/<images>.
    Folder { dir: PathBuf },
    /// The built-in sample: 32 public-domain paintings (Art Institute of Chicago, CC0) in 7 of
    /// the study's groups, to try every view offline.
    Sample,
}

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Download weights into the Hugging Face cache (offline: check the cache only): an
    /// architecture's ImageNet weights, or `clip` (OpenAI's CLIP ViT-B/32 with its tokenizer).
    Fetch {
        #[arg(value_parser = values::fetchable())]
        what: values::Fetchable,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Reads tensor `input` (N x 3 x H x W, normalised), writes `logits` and `features`.
    Forward(models::ForwardArgs),
    /// Writes seeded random backbone weights and an input tensor (for device checks).
    Random(device_tools::RandomArgs),
    /// Compares the tensors two safetensors files share; fails above a relative tolerance.
    Compare(device_tools::CompareArgs),
    /// Images per second of the evaluation forward or a training step on --device.
    Speed(device_tools::SpeedArgs),
    /// Writes a generated folder of cultures that differ in colour and texture.
    SynthFolder(device_tools::SynthFolderArgs),
}

pub fn open_workspace(cli_dir: &Option<PathBuf>) -> anyhow::Result<Workspace> {
    let dir = match cli_dir {
        Some(d) => d.clone(),
        None => default_dir()?,
    };
    Workspace::open(&dir).with_context(|| format!("opening workspace {}", dir.display()))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        #[cfg(feature = "gui")]
        return Ok(artculture::gui::run_app(cli.workspace, cli.device, cli.open).map(|_| ExitCode::SUCCESS)?);
        #[cfg(not(feature = "gui"))]
        anyhow::bail!("this build has no app (built without the `gui` feature); give a command, see --help");
    };
    if cli.precision != Precision::F32
        && matches!(command, Command::Embed(_) | Command::Similar(_) | Command::Search(_) | Command::LabelIssues(_))
    {
        anyhow::bail!("--precision {} covers the convolutional networks; CLIP commands run in f32", cli.precision);
    }
    // The networks run on this thread (training runs set their own stored precision).
    let _autocast = Autocast::new(cli.precision);
    match command {
        Command::Import(ImportCommand::Met(args)) => data::import_met(&cli.workspace, args),
        Command::Import(ImportCommand::Folder { dir }) => data::import_folder(&cli.workspace, &dir),
        Command::Import(ImportCommand::Sample) => data::import_sample(&cli.workspace),
        Command::Stats { json } => data::stats(&cli.workspace, json),
        Command::Rank { run, json, limit } => data::rank(&cli.workspace, run.as_deref(), json, limit, cli.device),
        Command::Flag { id, reason, note } => data::flag(&cli.workspace, &id, &reason, note),
        Command::Unflag { id } => data::unflag(&cli.workspace, &id),
        Command::Undo => data::undo_redo(&cli.workspace, true),
        Command::Redo => data::undo_redo(&cli.workspace, false),
        Command::ExportCuration { out } => data::export_curation(&cli.workspace, out),
        Command::Train(args) => runs::train(&cli.workspace, &args, cli.device, cli.precision),
        Command::Runs { json } => runs::runs(&cli.workspace, json),
        Command::Eval { run, json } => runs::eval(&cli.workspace, &run, json, cli.device),
        Command::Predict(args) => runs::predict(&cli.workspace, args, cli.device),
        Command::Merge { manifest, out, shards } => {
            let entries = artculture::shard::read_manifest(&manifest)?;
            let r = artculture::shard::merge(&entries, &shards, &out)?;
            eprintln!(
                "{}: {} lines from {} shard outputs ({} could not be read)",
                out.display(),
                r.lines,
                shards.len(),
                r.errors
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Map { run, json, png } => map::map(&cli.workspace, run.as_deref(), json, png, cli.device),
        Command::Weights(WeightsCommand::Fetch { what: values::Fetchable::Arch(arch) }) => models::fetch_weights(arch),
        Command::Weights(WeightsCommand::Fetch { what: values::Fetchable::Clip }) => clip::fetch(),
        Command::Embed(args) => clip::embed(&cli.workspace, args, cli.device),
        Command::Similar(args) => clip::similar(&cli.workspace, args, cli.device),
        Command::Search(args) => clip::search(&cli.workspace, args, cli.device),
        Command::LabelIssues(args) => clip::label_issues(&cli.workspace, args, cli.device),
        Command::Model(ModelCommand::Forward(args)) => models::forward(args, cli.device),
        Command::Model(ModelCommand::Random(args)) => device_tools::random(args),
        Command::Model(ModelCommand::Compare(args)) => device_tools::compare(args),
        Command::Model(ModelCommand::Speed(args)) => device_tools::speed(args, cli.device),
        Command::Model(ModelCommand::SynthFolder(args)) => device_tools::synth_folder(args),
        Command::Bench(args) => bench::bench(args, cli.precision),
        Command::Completions { shell } => {
            let shell = match shell.as_str() {
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                _ => clap_complete::Shell::Bash,
            };
            clap_complete::generate(shell, &mut Cli::command(), "artculture", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_open_the_app_and_commands_stay_commands_after_global_options() {
        // What a file manager runs: `artculture %F`.
        let cli = Cli::try_parse_from(["artculture", "/pics/a.jpg", "/pics/folder"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.open, [PathBuf::from("/pics/a.jpg"), PathBuf::from("/pics/folder")]);
        // Global options before a command leave it a command.
        let cli = Cli::try_parse_from(["artculture", "--workspace", "w", "--device", "cpu", "stats"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Stats { json: false })) && cli.open.is_empty());
        let cli = Cli::try_parse_from(["artculture", "merge", "--manifest", "m", "--out", "o", "s0", "s1"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Merge { ref shards, .. }) if shards.len() == 2));
        assert!(Cli::try_parse_from(["artculture", "predict", "--manifest", "m"]).is_err(), "--out is required");
    }
}
