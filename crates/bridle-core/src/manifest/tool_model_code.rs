//! Secrets and model-written programs do not mix: code the model writes can read any value it
//! is given and send it back in a form no redaction catches (reversed, split, one byte per
//! exit code). So a Tool whose program the model writes may hold no `secret://` reference
//! unless it opts in, saying why (`spec.allowSecretsWithModelCode.reason`).
//!
//! Which tools run model-written code: every `code` tool; a `container` tool whose command
//! lets the model choose the program, hands a model argument to an interpreter or a shell as
//! code (`python3 -c {{code}}`, `sh -c …`, `node -e …`, `awk {{prog}}`), or sends the arguments
//! on stdin to an interpreter with no script of its own (which runs stdin). This is a
//! judgement on the command line: a program that evaluates its arguments in ways of its own
//! is not recognised, which is why the safe shape — a fixed program taking data — is the one
//! to write, and a credential is better given to an `http` tool, which the service runs.

use super::{ContainerTool, ToolSpec, placeholders};

/// Interpreters that run a program given with a flag, or read from stdin without a script.
const INTERPRETERS: &[&str] = &[
    "python",
    "python2",
    "python3",
    "pypy",
    "pypy3",
    "node",
    "nodejs",
    "deno",
    "bun",
    "perl",
    "ruby",
    "php",
    "lua",
    "luajit",
    "rscript",
    "r",
    "julia",
    "pwsh",
    "powershell",
    "tclsh",
    "sh",
    "bash",
    "dash",
    "zsh",
    "ash",
    "ksh",
    "mksh",
    "fish",
    "busybox",
    "osascript",
    "jq",
];

/// Flags after which an interpreter's next argument is program text.
const CODE_FLAGS: &[&str] = &[
    "-c",
    "-e",
    "-E",
    "-r",
    "-p",
    "--eval",
    "--print",
    "--command",
    "-Command",
    "--exec",
    "-lc",
    "-ec",
    "-xc",
    "-ic",
];

/// Programs that run the rest of their command line as a command.
const WRAPPERS: &[&str] = &[
    "env", "exec", "nice", "nohup", "timeout", "stdbuf", "xargs", "time",
];

const AWKS: &[&str] = &["awk", "gawk", "mawk", "nawk"];

/// "python3.11" and "/usr/bin/python3" are "python3"; "Rscript" is "rscript".
fn program_name(arg: &str) -> String {
    let base = arg.rsplit('/').next().unwrap_or(arg).to_ascii_lowercase();
    let trimmed = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match trimmed {
        // "python3" keeps its major version, "python3.11" becomes "python3".
        "python" if base.starts_with("python3") => "python3".into(),
        "" => base,
        t => t.to_string(),
    }
}

/// Why the model writes (part of) the program this tool runs, when it does.
pub fn model_writes_program(s: &ToolSpec) -> Option<String> {
    if let Some(c) = &s.code {
        return Some(format!(
            "a code tool runs the {} source the model writes",
            c.language.as_str()
        ));
    }
    s.container.as_deref().and_then(container_runs_model_code)
}

fn container_runs_model_code(c: &ContainerTool) -> Option<String> {
    let argv = &c.command;
    let mut start = 0;
    // Skip wrappers and their options (and `env`'s NAME=value assignments).
    while let Some(a) = argv.get(start) {
        let name = program_name(a);
        if start > 0 && (a.starts_with('-') || (a.contains('=') && !a.contains("{{"))) {
            start += 1;
            continue;
        }
        if WRAPPERS.contains(&name.as_str()) || (start > 0 && name.parse::<f64>().is_ok()) {
            start += 1;
            continue;
        }
        break;
    }
    let prog = argv.get(start)?;
    if !placeholders(prog).is_empty() {
        return Some(format!(
            "the model chooses the program: command[{start}] is '{prog}'"
        ));
    }
    let name = program_name(prog);
    let rest = &argv[start + 1..];
    if INTERPRETERS.contains(&name.as_str()) {
        for (j, arg) in rest.iter().enumerate() {
            let i = start + 1 + j;
            if placeholders(arg).is_empty() || j == 0 {
                continue;
            }
            let prev = &rest[j - 1];
            if CODE_FLAGS.contains(&prev.as_str()) {
                return Some(format!(
                    "command[{i}] ('{arg}') hands a model argument to {name} {prev} as a program"
                ));
            }
        }
        let has_script = rest
            .iter()
            .any(|a| !a.starts_with('-') && placeholders(a).is_empty());
        if c.stdin && !has_script {
            return Some(format!(
                "the arguments go to {name}'s stdin, which it runs as a program (stdin: true and no script)"
            ));
        }
    }
    if AWKS.contains(&name.as_str())
        && let Some((j, arg)) = rest.iter().enumerate().find(|(_, a)| !a.starts_with('-'))
        && !placeholders(arg).is_empty()
    {
        return Some(format!(
            "command[{}] ('{arg}') is {name}'s program and holds a model argument",
            start + 1 + j
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: &[&str], stdin: bool) -> ContainerTool {
        let yaml = format!(
            "image: x\ncommand: {}\nstdin: {stdin}\n",
            serde_json::to_string(command).unwrap_or_default()
        );
        crate::yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn interpreters_given_a_model_argument_as_code_are_recognised() {
        for (argv, stdin) in [
            (&["python3", "-c", "{{code}}"][..], false),
            (&["/usr/bin/python3.11", "-c", "print({{n}})"], false),
            (&["bash", "-lc", "{{cmd}}"], false),
            (&["sh", "-c", "echo {{x}}"], false),
            (&["node", "-e", "{{js}}"], false),
            (&["env", "FOO=1", "perl", "-e", "{{p}}"], false),
            (&["timeout", "5", "ruby", "-e", "{{r}}"], false),
            (&["{{program}}", "--version"], false),
            (&["awk", "{{prog}}", "/data/x.csv"], false),
            (&["python3"], true),
            (&["python3", "-"], true),
        ] {
            assert!(
                container_runs_model_code(&container(argv, stdin)).is_some(),
                "{argv:?} stdin={stdin}"
            );
        }
    }

    #[test]
    fn fixed_programs_taking_data_are_not() {
        for (argv, stdin) in [
            (&["python3", "/app/report.py", "{{dataset}}"][..], true),
            (
                &["python3", "-c", "import sys; print(sys.argv[1])", "{{x}}"],
                false,
            ),
            (&["grep", "-c", "{{pattern}}", "/data/log"], false),
            (&["awk", "-F,", "{print $1}", "{{file}}"], false),
            (&["convert", "{{input}}", "out.png"], true),
        ] {
            assert!(
                container_runs_model_code(&container(argv, stdin)).is_none(),
                "{argv:?} stdin={stdin}"
            );
        }
    }
}
