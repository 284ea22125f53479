# Reliability: helper crashes, client crashes, stuck lock holders and other
# users. Real processes, real signals, every wait bounded by a deadline.

# ---- Small tools used only here -------------------------------------------

# Report what a test observed, when asked to (YAPLR_TEST_VERBOSE=1).
rel_note <- function(text) {
  if (nzchar(Sys.getenv("YAPLR_TEST_VERBOSE"))) message(text)
}

secs_since <- function(t0) as.numeric(Sys.time() - t0, units = "secs")

# A value that carries its own checksum, reproducible from (writer, seq).
# Sizes straddle 64 KiB: small ones travel inline (the helper's journal),
# large ones are raw vectors in their own object files.
rel_value <- function(w, i) {
  # Leave the caller's random number stream as it was.
  seed <- get0(".Random.seed", envir = globalenv(), inherits = FALSE)
  on.exit(
    if (is.null(seed)) {
      rm(".Random.seed", envir = globalenv())
    } else {
      assign(".Random.seed", seed, envir = globalenv())
    }
  )
  set.seed(w * 1000003 + i)
  n <- c(3L, 500L, 9000L, 20000L)[sample.int(4L, 1L)]
  x <- runif(n)
  structure(x, writer = w, seq = i, check = sum(x * seq_len(n)))
}
environment(rel_value) <- globalenv()

# Whether a retrieved value is whole: its checksum matches its elements.
rel_whole <- function(x) {
  is.double(x) && is.numeric(attr(x, "check")) && is.numeric(attr(x, "seq")) &&
    sum(as.vector(x) * seq_along(x)) == attr(x, "check")
}
environment(rel_whole) <- globalenv()

# Run a command as user nobody, or NULL when neither setpriv nor runuser
# exists. setpriv execs in place, so the process we get is the command itself.
as_nobody <- function(gid) {
  setpriv <- Sys.which("setpriv")
  if (nzchar(setpriv)) {
    return(function(cmd, args = character()) {
      c(setpriv, "--reuid=nobody", paste0("--regid=", gid), "--clear-groups", cmd, args)
    })
  }
  runuser <- Sys.which("runuser")
  if (nzchar(runuser)) {
    return(function(cmd, args = character()) c(runuser, "-u", "nobody", "--", cmd, args))
  }
  NULL
}

# Remove a directory tree, sockets included (unlink() leaves sockets behind).
remove_tree <- function(path) {
  if (file.exists(path)) callr::run("rm", c("-rf", "--", path), error_on_status = FALSE)
  invisible(!file.exists(path))
}

run_cmd <- function(argv, timeout = 20) {
  callr::run(argv[1L], argv[-1L], error_on_status = FALSE, timeout = timeout,
             wd = "/", stderr_to_stdout = TRUE)
}

# Connect to a Unix socket, send a 4-byte frame, and say what happened:
# "connect failed: <errno>", "closed" (no answer), "answered" or "timeout".
perl_probe <- paste(
  "use IO::Socket::UNIX; $| = 1; $SIG{PIPE} = 'IGNORE';",
  "$SIG{ALRM} = sub { print \"timeout\\n\"; exit 0 }; alarm 5;",
  "my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]);",
  "if (!$s) { print \"connect failed: $!\\n\"; exit 0 }",
  "if (!defined syswrite($s, pack('V', 4) . 'ping')) { print \"closed: $!\\n\"; exit 0 }",
  "my $n = sysread($s, my $buf, 4096);",
  "if (!defined $n) { print \"closed: $!\\n\" } elsif ($n == 0) { print \"closed\\n\" }",
  "else { print \"answered\\n\" }"
)

# Listen on a Unix socket, accept connections and never answer.
perl_mute_listener <- paste(
  "use IO::Socket::UNIX; $| = 1;",
  "my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 16)",
  "  or die \"listen: $!\";",
  "chmod 0777, $ARGV[0]; print \"listening\\n\";",
  "my @keep; while (my $c = $s->accept) { push @keep, $c }"
)

# ---- 1. Helper crashes ------------------------------------------------------

test_that("killing the helper repeatedly with SIGKILL loses no acknowledged object", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  ctl <- tempfile("yaplr-rel-")
  dir.create(ctl)
  withr::defer(unlink(ctl, recursive = TRUE))
  n_writers <- 3L

  writer <- function(dir, w, ctl, value, whole) {
    options(yaplr.dir = dir, yaplr.timeout = 5)
    tags <- sprintf("w%d-tag%d", w, 1:6)
    set.seed(w)
    plan_tag <- sample(tags, 50000L, replace = TRUE)
    plan_op <- sample(c("send", "send", "send", "remove", "check"), 50000L, replace = TRUE)
    # For each tag, the seqs it may hold now (0 = absent). One element when
    # the last call answered; two when a call was cut off by a kill.
    state <- stats::setNames(rep(list(0), length(tags)), tags)
    outcome <- character()
    bad <- character()
    verified <- 0L
    max_secs <- 0
    writeLines("ready", file.path(ctl, paste0("ready-", w)))
    deadline <- Sys.time() + 60
    while (!file.exists(file.path(ctl, "go")) && Sys.time() < deadline) Sys.sleep(0.005)
    i <- 0L
    while (!file.exists(file.path(ctl, "stop")) && i < length(plan_op) &&
           Sys.time() < deadline) {
      i <- i + 1L
      tag <- plan_tag[i]
      op <- plan_op[i]
      t0 <- Sys.time()
      res <- tryCatch(
        {
          if (op == "send") {
            yaplr::send_object(value(w, i), tag)
            state[[tag]] <- i
          } else if (op == "remove") {
            yaplr::remove_object(tag)
            state[[tag]] <- 0
          } else {
            got <- yaplr::retrieve_object(tag)
            s <- attr(got, "seq")
            if (!whole(got)) {
              bad <- c(bad, sprintf("%s: a torn value (seq %s)", tag, format(s)))
            } else if (!(s %in% state[[tag]])) {
              bad <- c(bad, sprintf("%s: got seq %d, expected one of {%s}", tag, s,
                                    paste(state[[tag]], collapse = ",")))
            } else if (!identical(got, value(w, s))) {
              bad <- c(bad, sprintf("%s: seq %d differs from what was sent", tag, s))
            } else {
              verified <- verified + 1L
              state[[tag]] <- s
            }
          }
          "ok"
        },
        yaplr_not_found = function(e) {
          # A remove retried after the first attempt was applied also ends
          # here; either way the tag is now absent.
          if (op == "check" && !(0 %in% state[[tag]])) {
            bad <<- c(bad, sprintf("%s: not found, expected one of {%s}", tag,
                                   paste(state[[tag]], collapse = ",")))
          }
          state[[tag]] <<- 0
          "yaplr_not_found"
        },
        yaplr_error = function(e) {
          if (op == "send") state[[tag]] <<- union(state[[tag]], i)
          if (op == "remove") state[[tag]] <<- union(state[[tag]], 0)
          class(e)[1L]
        }
      )
      max_secs <- max(max_secs, as.numeric(Sys.time() - t0, units = "secs"))
      outcome <- c(outcome, paste(op, res))
    }
    list(state = state, outcome = table(outcome), bad = bad, verified = verified,
         calls = i, max_secs = max_secs)
  }

  procs <- lapply(seq_len(n_writers), function(w) {
    callr::r_bg(writer, list(dir = dir, w = w, ctl = ctl, value = rel_value,
                             whole = rel_whole))
  })
  withr::defer(for (p in procs) p$kill())
  wait_until(function() {
    all(file.exists(file.path(ctl, paste0("ready-", seq_len(n_writers)))))
  }, timeout = 30, what = "the writers to load yaplr")
  file.create(file.path(ctl, "go"))

  # Kill whatever helper serves the store at random moments for 6 s.
  kills <- 0L
  killed <- integer()
  writers_lived <- TRUE
  t_run <- Sys.time()
  while (secs_since(t_run) < 6) {
    Sys.sleep(runif(1L, 0.1, 0.5))
    pid <- helper_pid_from_lock(dir)
    if (!is.na(pid)) {
      tools::pskill(pid, tools::SIGKILL)
      wait_until(function() !pid_alive(pid), what = "the helper to die")
      kills <- kills + 1L
      killed <- c(killed, pid)
    }
    writers_lived <- writers_lived && all(vapply(procs, function(p) p$is_alive(), logical(1)))
  }
  # No writer died or gave up while the helper was being killed.
  expect_true(writers_lived)
  file.create(file.path(ctl, "stop"))
  t_stop <- Sys.time()
  for (p in procs) p$wait(30000)
  expect_false(any(vapply(procs, function(p) p$is_alive(), logical(1))))
  expect_lt(secs_since(t_stop), 30)
  results <- lapply(procs, function(p) p$get_result())

  expect_gte(kills, 5L)
  expect_length(unique(killed), kills)
  # Each kill was followed by a restart that rebuilt the catalog from files.
  log <- readLines(file.path(dir, "yaplrd.log"), warn = FALSE)
  starts <- regmatches(log, regexpr("serving .* with [0-9]+ object", log))
  expect_gte(length(starts), kills + 1L)
  rebuilt <- as.integer(sub(".* with ([0-9]+) object", "\\1", starts[-1L]))
  # Writers saw no torn value and no lost or resurrected value while running.
  bad <- unlist(lapply(results, `[[`, "bad"))
  expect(length(bad) == 0L,
         paste(c("writers saw values they should not have:", head(bad, 20)), collapse = "\n"))
  for (r in results) {
    expect_gt(r$calls, 50L)
    # No call waited anywhere near its bound (5 s per wait).
    expect_lt(r$max_secs, 20)
  }

  # Afterwards, from this session: every tag holds what its last
  # acknowledged call says (or, when that call was cut off, one of the two).
  failures <- character()
  verified <- 0L
  for (w in seq_len(n_writers)) {
    for (tag in names(results[[w]]$state)) {
      may <- results[[w]]$state[[tag]]
      got <- tryCatch(retrieve_object(tag), yaplr_not_found = function(e) NULL)
      if (is.null(got)) {
        if (!(0 %in% may)) failures <- c(failures, sprintf("%s: lost (expected seq {%s})", tag, paste(may, collapse = ",")))
      } else if (!rel_whole(got)) {
        failures <- c(failures, sprintf("%s: torn", tag))
      } else if (!(attr(got, "seq") %in% may)) {
        failures <- c(failures, sprintf("%s: seq %d, expected {%s}", tag, attr(got, "seq"), paste(may, collapse = ",")))
      } else if (!identical(got, rel_value(w, attr(got, "seq")))) {
        failures <- c(failures, sprintf("%s: differs", tag))
      } else {
        verified <- verified + 1L
      }
    }
  }
  expect(length(failures) == 0L,
         paste(c("tags not as their last acknowledged call left them:", failures), collapse = "\n"))
  listed <- rownames(list_objects())
  all_tags <- unlist(lapply(results, function(r) names(r$state)))
  expect_true(all(listed %in% all_tags))
  # Nothing half-written or unpublished stays behind once the writers are
  # gone (the helper sweeps every 2 s): every object file is committed and
  # is the one value of a listed tag (small values have no file).
  wait_until(function() {
    h <- object_headers(dir)
    all(h$state %in% 2L) && !anyDuplicated(h$tag) && all(h$tag %in% rownames(list_objects()))
  }, timeout = 15, what = "the store to hold only published objects")
  n_files <- nrow(object_headers(dir))

  n_ok_sends <- sum(vapply(results, function(r) {
    o <- r$outcome
    if ("send ok" %in% names(o)) as.integer(o[["send ok"]]) else 0L
  }, integer(1)))
  n_cut <- sum(vapply(results, function(r) {
    o <- r$outcome
    sum(o[!grepl(" (ok|yaplr_not_found)$", names(o))])
  }, numeric(1)))
  n_checks <- sum(vapply(results, `[[`, integer(1), "verified"))
  max_call <- max(vapply(results, `[[`, numeric(1), "max_secs"))
  rel_note(sprintf(
    "[reliability] %d helper kills, %d helper starts (catalogs rebuilt with %d-%d objects); %d calls, %d acknowledged sends, %d calls cut off; %d values verified during the run, %d tags verified at the end (%d stored, %d in files); slowest call %.2f s",
    kills, length(starts), min(rebuilt), max(rebuilt),
    sum(vapply(results, `[[`, integer(1), "calls")), n_ok_sends, n_cut,
    n_checks, verified, length(listed), n_files, max_call
  ))
})

# One send of `new` over `old` for tag "t", cut off on purpose: the helper
# is stopped while the publish is in flight, then killed; the next helper
# (started by this session) rebuilds its catalog and is stopped in turn, so
# the writer's retry times out. Returns the writer's outcome and what the
# tag holds afterwards.
cut_off_send <- function(dir, old, new) {
  send_object(old, "t")
  pid1 <- server_info()$pid
  ctl <- tempfile("yaplr-rel-")
  dir.create(ctl)
  withr::defer(unlink(ctl, recursive = TRUE))
  w <- callr::r_bg(function(dir, ctl, new) {
    options(yaplr.dir = dir, yaplr.timeout = 20)
    yaplr::ping_server()
    file.create(file.path(ctl, "ready"))
    deadline <- Sys.time() + 60
    while (!file.exists(file.path(ctl, "go")) && Sys.time() < deadline) Sys.sleep(0.005)
    file.create(file.path(ctl, "sending"))
    tryCatch({
      yaplr::send_object(new, "t", timeout = 2)
      "ok"
    }, yaplr_error = function(e) class(e)[1L])
  }, list(dir = dir, ctl = ctl, new = new))
  wpid <- w$get_pid()
  stopped <- integer()
  withr::defer({
    for (p in stopped) if (pid_alive(p)) tools::pskill(p, tools::SIGCONT)
    w$kill()
  })
  wait_until(function() file.exists(file.path(ctl, "ready")), what = "the writer to connect")

  stopped <- c(stopped, pid1)
  tools::pskill(pid1, tools::SIGSTOP)
  wait_for_state(pid1, "T")
  file.create(file.path(ctl, "go"))
  # The writer has written its value and waits for the helper's answer.
  wchan <- function() {
    tryCatch(readLines(sprintf("/proc/%d/wchan", wpid), warn = FALSE), error = function(e) "")
  }
  # Values over 64 KiB get an object file; smaller ones go inline.
  in_files <- length(serialize(new, NULL)) > 65536L
  wait_until(function() {
    h <- object_headers(dir)
    file.exists(file.path(ctl, "sending")) &&
      (!in_files || any(h$state %in% 2L & h$pid %in% wpid)) &&
      any(grepl("poll", wchan()))
  }, what = "the writer to wait for its publish")
  stopped <- c(stopped, wpid)
  tools::pskill(wpid, tools::SIGSTOP)
  wait_for_state(wpid, "T")
  tools::pskill(pid1, tools::SIGKILL)
  wait_until(function() !pid_alive(pid1), what = "the helper to die")
  # Another session's call starts the replacement helper.
  make_sure_server_is_started(quiet = TRUE, timeout = 10)
  pid2 <- helper_pid_from_lock(dir)
  stopifnot(!is.na(pid2))
  stopped <- c(stopped, pid2)
  tools::pskill(pid2, tools::SIGSTOP)
  wait_for_state(pid2, "T")
  tools::pskill(wpid, tools::SIGCONT)
  w$wait(20000)
  stopifnot(!w$is_alive())
  outcome <- w$get_result()
  tools::pskill(pid2, tools::SIGCONT)
  got <- tryCatch(retrieve_object("t", timeout = 10), yaplr_not_found = function(e) "<lost>")
  list(outcome = outcome, got = got)
}

test_that("a send cut off by a helper crash leaves the old or the new value, never nothing", {
  dir <- local_store()
  # A large value (its own object file) ...
  old <- rel_value(9L, 1L)[seq_len(20000)]
  new <- rel_value(9L, 2L)[seq_len(20000)]
  r <- cut_off_send(dir, old, new)
  expect_match(r$outcome, "^yaplr_")
  expect_true(identical(r$got, old) || identical(r$got, new),
              info = paste("after", r$outcome, "the tag holds", class(r$got)[1L], format(head(r$got, 1))))
  # ... and a small one (inline in the helper's journal).
  r2 <- cut_off_send(dir, "old", "new")
  expect_match(r2$outcome, "^yaplr_")
  expect_true(r2$got %in% c("old", "new"), info = paste("after", r2$outcome, "the tag holds", r2$got))
  rel_note(sprintf("[reliability] cut-off sends: file-backed gave %s and kept %s; inline gave %s and kept %s",
                   r$outcome, if (identical(r$got, old)) "the old value" else if (identical(r$got, new)) "the new value" else "NOTHING",
                   r2$outcome, r2$got))
})

# ---- 2. Client crashes ------------------------------------------------------

test_that("a client killed while writing a big object leaks nothing", {
  dir <- local_store()
  send_object("before", "other")
  # 800 MB (160 MB when less than 4 GB of memory is available).
  meminfo <- tryCatch(readLines("/proc/meminfo"), error = function(e) character())
  avail_kb <- suppressWarnings(as.numeric(sub("[^0-9]*([0-9]+).*", "\\1",
                                              grep("^MemAvailable:", meminfo, value = TRUE))))
  n <- if (length(avail_kb) == 1L && !is.na(avail_kb) && avail_kb > 4 * 2^20) 1e8 else 2e7
  p <- callr::r_bg(function(dir, n) {
    options(yaplr.dir = dir, yaplr.timeout = 60)
    x <- runif(n)
    yaplr::send_object(x, "big")
    "sent"
  }, list(dir = dir, n = n))
  withr::defer(p$kill())
  pid <- p$get_pid()

  # Kill the writer the moment it holds an object file open in the store:
  # the file has no name while it is written (O_TMPFILE), so it is seen
  # through the writer's descriptors only.
  writing <- function() {
    fds <- list.files(sprintf("/proc/%d/fd", pid), full.names = TRUE)
    links <- suppressWarnings(vapply(fds, function(f) {
      l <- Sys.readlink(f)
      if (is.na(l)) "" else l
    }, ""))
    any(startsWith(links, paste0(dir, "/")) & grepl("(deleted)", links, fixed = TRUE))
  }
  killed <- FALSE
  named <- FALSE
  deadline <- Sys.time() + 60
  while (!killed && p$is_alive() && Sys.time() < deadline) {
    named <- named || nrow(object_headers(dir)) > 0L
    if (writing()) {
      tools::pskill(pid, tools::SIGKILL)
      killed <- TRUE
    } else {
      Sys.sleep(0.002)
    }
  }
  if (!killed) {
    stop("the writer was never seen writing an object file (writer alive: ", p$is_alive(), ")")
  }
  wait_until(function() !pid_alive(pid), what = "the writer to die")
  # No file was ever named for the unfinished object, and none is left.
  expect_false(named)
  expect_identical(nrow(object_headers(dir)), 0L)

  # Other calls work at once.
  t0 <- Sys.time()
  send_object("after", "other2")
  expect_identical(retrieve_object("other"), "before")
  expect_identical(retrieve_object("other2"), "after")
  expect_lt(secs_since(t0), 2)
  expect_error(retrieve_object("big"), class = "yaplr_not_found")
  expect_setequal(rownames(list_objects()), c("other", "other2"))
  expect_identical(nrow(object_headers(dir)), 0L)
})

test_that("senders killed in their first milliseconds leave no file, even without a helper", {
  dir <- local_store()
  send_object("kept", "k")
  for (i in 1:12) {
    p <- callr::r_bg(function(dir) {
      options(yaplr.dir = dir, yaplr.timeout = 60)
      x <- runif(5e7)
      cat("go\n")
      yaplr::send_object(x, "big")
    }, list(dir = dir), stdout = "|")
    wait_until(function() p$is_alive() && any(grepl("go", p$read_output_lines())) || !p$is_alive(),
               what = "the sender to start sending")
    Sys.sleep(runif(1L, 0, 0.05))
    p$kill()
  }
  # Nothing to sweep: no object file exists but those published.
  expect_identical(nrow(object_headers(dir)), 0L)
  quit_server(keep = TRUE)
  expect_identical(nrow(object_headers(dir)), 0L)
  expect_identical(retrieve_object("k"), "kept")
})

# ---- 3. Robust timed locks --------------------------------------------------

# Hold <dir>/spawn.lock with flock(1) in a single process (sleep inherits
# the locked descriptor), so killing that one pid frees the lock.
hold_spawn_lock <- function(dir, env = parent.frame()) {
  skip_if(!nzchar(Sys.which("flock")), "flock (util-linux) is missing")
  dir.create(dir, mode = "0700", showWarnings = FALSE)
  holder <- callr::process$new(
    "sh", c("-c", 'exec 9>>"$1" && flock -x 9 && echo locked && exec sleep 300',
            "sh", file.path(dir, "spawn.lock")),
    stdout = "|", stderr = "|"
  )
  withr::defer(
    if (holder$is_alive()) {
      tools::pskill(holder$get_pid(), tools::SIGCONT)
      holder$kill()
    },
    envir = env
  )
  holder$poll_io(10000)
  expect_identical(holder$read_output_lines(), "locked")
  holder
}

test_that("a stopped holder of the spawn lock gives a timeout; once it is killed, calls succeed", {
  dir <- local_store()
  holder <- hold_spawn_lock(dir)
  pid <- holder$get_pid()
  tools::pskill(pid, tools::SIGSTOP)
  wait_for_state(pid, "T")
  expect_false(is_server_running())

  t0 <- Sys.time()
  err <- expect_error(send_object(1, "x", timeout = 1), class = "yaplr_timeout")
  waited <- secs_since(t0)
  expect_gte(waited, 0.9)
  expect_lt(waited, 5)
  msg <- conditionMessage(err)
  expect_match(msg, "helper")
  expect_match(msg, "to start", fixed = TRUE)
  expect_match(msg, dir, fixed = TRUE)
  expect_match(msg, "yaplr.timeout", fixed = TRUE)
  expect_false(is_server_running())
  expect_error(retrieve_object("x", timeout = 0.3), class = "yaplr_timeout")

  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the lock holder to die")
  t0 <- Sys.time()
  send_object(1, "x", timeout = 10)
  after_kill <- secs_since(t0)
  expect_lt(after_kill, 3)
  expect_identical(retrieve_object("x"), 1)
  expect_true(is_server_running())
  rel_note(sprintf(
    "[reliability] stopped spawn-lock holder: timeout after %.2f s (limit 1 s); first call after its death took %.3f s",
    waited, after_kill
  ))
})

test_that("a holder of the spawn lock killed with SIGKILL leaves nothing to wait for", {
  dir <- local_store()
  holder <- hold_spawn_lock(dir)
  pid <- holder$get_pid()
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the lock holder to die")
  t0 <- Sys.time()
  send_object("v", "x", timeout = 10)
  took <- secs_since(t0)
  expect_lt(took, 2)
  expect_identical(retrieve_object("x"), "v")
  rel_note(sprintf("[reliability] killed spawn-lock holder: first call took %.3f s", took))
})

# ---- 4. Other users ---------------------------------------------------------

skip_unless_nobody_works <- function() {
  skip_on_os("windows")
  skip_if_not(Sys.info()[["effective_user"]] == "root", "needs root to run commands as nobody")
  id <- function(opt) {
    out <- tryCatch(run_cmd(c("id", opt, "nobody")), error = function(e) NULL)
    if (is.null(out) || out$status != 0L) NA_integer_ else as.integer(trimws(out$stdout))
  }
  uid <- id("-u")
  gid <- id("-g")
  skip_if(is.na(uid) || is.na(gid), "there is no user nobody")
  nobody <- as_nobody(gid)
  skip_if(is.null(nobody), "neither setpriv nor runuser is available")
  perl <- Sys.which("perl")
  skip_if(!nzchar(perl), "perl is missing (needed to talk to a Unix socket)")
  ok <- run_cmd(nobody(perl, c("-MIO::Socket::UNIX", "-e", "print 'ok'")))
  skip_if(ok$status != 0L, "can not run perl with IO::Socket::UNIX as nobody")
  list(run = function(cmd, args = character()) run_cmd(nobody(cmd, args)),
       argv = nobody, perl = unname(perl), uid = uid)
}

test_that("another user can not read the store, reach the helper, or block this user", {
  nb <- skip_unless_nobody_works()
  dir <- local_store()
  big <- runif(1e5)
  send_object(mtcars, "cars")  # small: inline, in the helper's journal
  send_object(big, "big")      # large: in its own object file
  obj <- object_headers(dir)$file
  expect_length(obj, 1L)
  sock <- file.path(dir, "yaplrd.sock")
  expect_true(file.exists(sock))
  private <- c(obj, list.files(dir, pattern = "journal", full.names = TRUE))

  # (i) The directory, the object file and the journal are closed to nobody.
  ls <- nb$run("ls", dir)
  expect_false(ls$status == 0L)
  expect_match(ls$stdout, "Permission denied")
  for (f in private) {
    expect_identical(as.character(file.info(f)$mode), "600", info = f)
    cat_f <- nb$run("cat", f)
    expect_false(cat_f$status == 0L, info = f)
    expect_match(cat_f$stdout, "Permission denied", info = f)
    expect_identical(nb$run("test", c("-r", f))$status, 1L, info = f)
  }

  # (ii) nobody can not get an answer from the helper's socket.
  probe <- nb$run(nb$perl, c("-e", perl_probe, sock))
  expect_match(probe$stdout, "^connect failed: Permission denied")
  # Even with the directory and socket opened up, the helper itself refuses
  # a peer of another uid (SO_PEERCRED): the connection closes unanswered.
  probe2 <- local({
    withr::defer({
      Sys.chmod(sock, "0600", use_umask = FALSE)
      Sys.chmod(dir, "0700", use_umask = FALSE)
    })
    Sys.chmod(dir, "0711", use_umask = FALSE)
    Sys.chmod(sock, "0777", use_umask = FALSE)
    nb$run(nb$perl, c("-e", perl_probe, sock))
  })
  expect_identical(as.character(file.info(dir)$mode), "700")
  expect_match(probe2$stdout, "^closed")
  expect_match(paste(readLines(file.path(dir, "yaplrd.log")), collapse = "\n"),
               paste("refused a connection from uid", nb$uid))
  # The helper is unharmed.
  expect_identical(retrieve_object("cars"), mtcars)
  expect_identical(retrieve_object("big"), big)

  # (iii) A store directory pre-created by nobody is refused at once.
  pre <- tempfile("yaplr-precreated-", tmpdir = "/tmp")
  withr::defer(remove_tree(pre))
  expect_identical(nb$run("mkdir", c("-m", "0755", pre))$status, 0L)
  withr::with_options(list(yaplr.dir = pre), {
    t0 <- Sys.time()
    err <- expect_error(send_object(1, "x", timeout = 5), class = "yaplr_store")
    expect_lt(secs_since(t0), 2)
    expect_match(conditionMessage(err), paste("belongs to uid", nb$uid))
    expect_error(retrieve_object("x", timeout = 5), class = "yaplr_store")
    expect_error(is_server_running(), class = "yaplr_store")
  })
  expect_identical(store_files(pre), character())
})

# A store of user nobody, with nobody's helper running and one object
# ("theirs" = 1:10) sent by an R session of nobody. Skips when nobody can
# not run R with yaplr from this library.
local_nobody_store <- function(nb, env = parent.frame()) {
  theirs <- tempfile("yaplr-nobody-", tmpdir = "/tmp")
  withr::defer(
    {
      pid <- helper_pid_from_lock(theirs)
      if (!is.na(pid)) {
        tools::pskill(pid, tools::SIGKILL)
        wait_until(function() !pid_alive(pid), what = "nobody's helper to die")
      }
      remove_tree(theirs)
    },
    envir = env
  )
  code <- sprintf(
    'options(yaplr.dir = "%s"); yaplr::send_object(1:10, "theirs"); cat(yaplr::server_info()$pid)',
    theirs
  )
  out <- run_cmd(nb$argv("env", c(
    paste0("R_LIBS=", paste(.libPaths(), collapse = ":")), "HOME=/tmp",
    file.path(R.home("bin"), "Rscript"), "--vanilla", "-e", code
  )), timeout = 60)
  skip_if(out$status != 0L, "nobody can not run R with yaplr from this library")
  pid <- helper_pid_from_lock(theirs)
  expect_false(is.na(pid))
  expect_identical(as.character(pid), trimws(out$stdout))
  expect_identical(as.integer(file.info(file.path(theirs, "yaplrd.sock"))$uid), nb$uid)
  list(dir = theirs, pid = pid)
}

test_that("a helper started by another user refuses this user", {
  nb <- skip_unless_nobody_works()
  st <- local_nobody_store(nb)
  theirs <- st$dir

  # root can open the socket (it bypasses permissions), but gets no answer.
  probe <- run_cmd(c(nb$perl, "-e", perl_probe, file.path(theirs, "yaplrd.sock")))
  expect_match(probe$stdout, "^closed")
  expect_match(paste(readLines(file.path(theirs, "yaplrd.log")), collapse = "\n"),
               "refused a connection from uid 0")
  expect_true(pid_alive(st$pid))

  # The R API should refuse the store at once, as for a directory of another
  # user without a helper (yaplr_store, "belongs to uid").
  withr::local_options(yaplr.dir = theirs)
  t0 <- Sys.time()
  err <- tryCatch(send_object(1, "x", timeout = 5), error = identity)
  took <- secs_since(t0)
  expect_s3_class(err, "yaplr_error")
  expect_lt(took, 2)
  expect_true(pid_alive(st$pid))
  expect_s3_class(err, "yaplr_store")
  expect_match(conditionMessage(err), paste("belongs to uid", nb$uid))
})

test_that("quit_server() leaves another user's helper and objects alone", {
  nb <- skip_unless_nobody_works()
  st <- local_nobody_store(nb)
  before <- store_files(st$dir)
  expect_true("catalog.journal" %in% before)
  withr::local_options(yaplr.dir = st$dir)
  res <- tryCatch(quit_server(timeout = 5), error = identity)
  alive <- pid_alive(st$pid)
  after <- if (dir.exists(st$dir)) store_files(st$dir) else "<store directory removed>"
  expect_s3_class(res, "yaplr_store")
  expect_true(alive)
  expect_identical(after, before)
})

test_that("a socket planted by another user in a store it owns does not make calls wait", {
  nb <- skip_unless_nobody_works()
  pre <- tempfile("yaplr-planted-", tmpdir = "/tmp")
  withr::defer(remove_tree(pre))
  expect_identical(nb$run("mkdir", c("-m", "0755", pre))$status, 0L)
  argv <- nb$argv(nb$perl, c("-e", perl_mute_listener, file.path(pre, "yaplrd.sock")))
  listener <- callr::process$new(argv[1L], argv[-1L], stdout = "|", stderr = "2>&1", wd = "/")
  withr::defer(listener$kill_tree())
  listener$poll_io(10000)
  expect_identical(listener$read_output_lines(), "listening")

  withr::local_options(yaplr.dir = pre)
  t0 <- Sys.time()
  err <- tryCatch(send_object(1, "x", timeout = 3), error = identity)
  took <- secs_since(t0)
  expect_s3_class(err, "yaplr_store")
  expect_lt(took, 2)
})
