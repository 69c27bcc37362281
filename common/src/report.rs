//! An error as a person reads it: the cause chain on one line joined by `: `, each cause once, and
//! control characters from names escaped (line breaks between sentences kept).
//!
//! Many error types print their cause in their own message *and* expose it as `source()`, so
//! anyhow's `{:#}` would print it twice ("…: no cartridge is loaded: no cartridge is loaded").
//! The chain is joined here instead, skipping a cause that the text so far already ends with.

/// The whole chain of `e`, for stderr.
pub fn render(e: &anyhow::Error) -> String {
    let text = chain(e);
    let lines: Vec<_> = text.lines().map(crate::escape::escape).collect();
    lines.join("\n")
}

/// Prints a failed command's error on stderr: `PROGRAM: message` for people, or with `--json` one
/// JSON line a script can parse, `{"message_type":"exit_error","code":N,"message":"…"}` (restic's
/// shape), with the names in it exact.
pub fn print_exit_error(program: &str, e: &anyhow::Error, code: u8, json: bool) {
    if json {
        let v =
            serde_json::json!({"message_type": "exit_error", "code": code, "message": chain(e)});
        eprintln!("{v}");
    } else {
        eprintln!("{program}: {}", render(e));
    }
}

/// The chain joined with `: `, each cause once, unescaped.
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("locating partition 0 block 0: {source}")]
    struct Outer {
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("no cartridge is loaded in the drive")]
    struct Inner;

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow::Error::new(Outer { source: Inner }).context("formatting drive 1");
        assert_eq!(
            render(&e),
            "formatting drive 1: locating partition 0 block 0: no cartridge is loaded in the drive"
        );
        let e = anyhow::anyhow!("a\x1b[2J name").context("reading x\ny");
        assert_eq!(render(&e), "reading x\ny: a\\e[2J name");
    }
}
