//! What the fuzz targets share: the stack a service's code runs on, how an input is cut into
//! a line number and a text, and the bound on an error message.
//!
//! A target fails (panics, so libFuzzer saves the input) on a panic or a stack overflow in the
//! code under test, and on the properties each target states: here, an error message that
//! quotes its input without bound (issue 30, item 3).

/// Tokio's worker threads have 2 MiB stacks: the services' request handlers run on them, so a
/// recursion that would overflow there must overflow here too (the main thread has 8 MiB).
pub const SERVICE_STACK: usize = 2 << 20;

/// Longest error message a target accepts. Errors quote input through
/// `bridle_core::redact::preview` (a few hundred characters); an error longer than this has
/// echoed its input whole, and a big enough input then makes it exceed what a gRPC client
/// accepts (16 KiB of metadata).
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Runs `f` on a thread with a service worker's stack. A panic there aborts the process
/// (libfuzzer-sys's panic hook), which libFuzzer reports as a crash with the input; so does a
/// stack overflow, through [`StackOverflowReport`].
pub fn on_service_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    StackOverflowReport::install();
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("service-stack".into())
            .stack_size(SERVICE_STACK)
            .spawn_scoped(s, || {
                let _alt = AltStack::new();
                f()
            });
        match worker {
            Ok(h) => match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            },
            // The harness cannot run at all: stop loudly rather than report nothing.
            Err(e) => panic!("cannot start the service-stack thread: {e}"),
        }
    })
}

/// A stack overflow must be a reported crash. libFuzzer provides `main`, so Rust's runtime never
/// installs its stack-overflow handler, and libFuzzer's own SIGSEGV handler runs on the stack
/// that just overflowed: the process died silently and no input was saved. This handler runs
/// on an alternate stack ([`AltStack`]), says what happened and aborts; libFuzzer's SIGABRT
/// handler then saves the input as a crash.
struct StackOverflowReport;

impl StackOverflowReport {
    fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe
            // functions (write, abort).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = Self::on_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
                libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            }
        });
    }

    extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        const MSG: &[u8] =
            b"\n==bridle-fuzz: SIGSEGV, most likely a stack overflow: the input makes the code \
            under test recurse deeper than a 2 MiB Tokio worker stack allows\n";
        // SAFETY: write(2) and abort(3) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::abort();
        }
    }
}

/// An alternate signal stack for the current thread, for [`StackOverflowReport`] (and
/// libFuzzer's crash handler after it); removed when dropped.
struct AltStack {
    _mem: Vec<u8>,
}

impl AltStack {
    const SIZE: usize = 256 * 1024;

    fn new() -> Self {
        let mut mem = vec![0u8; Self::SIZE];
        let ss = libc::stack_t {
            ss_sp: mem.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: Self::SIZE,
        };
        // SAFETY: `mem` outlives the registration, which `drop` removes first.
        unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        AltStack { _mem: mem }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let ss = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disables this thread's alternate stack before its memory is freed.
        unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    }
}

/// Splits an input into a 32-bit line number (its first four bytes, little-endian; 1 when
/// shorter) and the rest as text. The line number is what a gRPC client sends as
/// `ManifestDocument.first_line`, so it is as hostile as the text.
///
/// With `BRIDLE_FUZZ_SMALL_FIRST_LINE=1` in the environment the line number stays below 2^20,
/// so that a run can look past a known line-arithmetic overflow while its fix is pending.
pub fn line_and_text(data: &[u8]) -> (u32, String) {
    static SMALL: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::env::var_os("BRIDLE_FUZZ_SMALL_FIRST_LINE").is_some_and(|v| v == "1")
    });
    match data.split_first_chunk::<4>() {
        Some((n, rest)) => {
            let line = u32::from_le_bytes(*n);
            let line = if *SMALL { line % (1 << 20) } else { line };
            (line, String::from_utf8_lossy(rest).into_owned())
        }
        None => (1, String::from_utf8_lossy(data).into_owned()),
    }
}

/// Fails when an error message is longer than [`MAX_MESSAGE_BYTES`].
pub fn assert_bounded(what: &str, message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "{what}: an error message of {} bytes (more than {MAX_MESSAGE_BYTES}) quotes its input \
         without bound (issue 30 item 3); it starts: {}",
        message.len(),
        bridle_core::redact::preview(message, 300)
    );
}
