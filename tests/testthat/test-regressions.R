# Failures found in review, each reproduced as it was reported.

test_that("a send that times out never destroys the value it was replacing", {
  local_store()
  send_object(runif(1e5), "x")
  lost <- 0
  for (i in 1:100) {
    tryCatch(send_object(runif(1e5), "x", timeout = 2e-4), yaplr_error = function(e) NULL)
    if (!does_object_exist("x", timeout = 20)) lost <- lost + 1
    expect_identical(length(retrieve_object("x", timeout = 20)), 100000L)
  }
  expect_identical(lost, 0)
})

test_that("the helper keeps none of the session's descriptors nor its directory", {
  local_store()
  out <- tempfile()
  p <- pipe(paste("cat >", shQuote(out)), "w")
  send_object(1, "starts the helper")
  pid <- server_info()$pid
  # A pipe() connection whose write end the helper inherited never ends.
  done <- callr::r(function(pid) {
    fds <- list.files(sprintf("/proc/%d/fd", pid))
    list(n = length(fds), cwd = Sys.readlink(sprintf("/proc/%d/cwd", pid)))
  }, list(pid = pid))
  expect_identical(done$cwd, "/")
  expect_lt(done$n, 12)
  close(p)
  expect_true(file.exists(out))
  unlink(out)
})

test_that("a view read by a finalizer at exit does not crash R", {
  local_store()
  send_object(runif(1e5), "big")
  res <- callr::r_safe(function(dir) {
    options(yaplr.dir = dir)
    e <- new.env()
    reg.finalizer(e, function(e) sum(e$x), onexit = TRUE)
    e$x <- yaplr::retrieve_object("big")
    TRUE
  }, list(dir = getOption("yaplr.dir")))
  expect_true(res)
})

test_that("sending a compact sequence stores it whole", {
  local_store()
  x <- 1:2e6
  send_object(x, "seq")
  expect_identical(retrieve_object("seq"), 1:2e6)
  expect_true(object_info("seq")$zero_copy)
})

test_that("a change that timed out never takes effect later", {
  local_store()
  send_object("V0", "t")
  send_object(1, "kept")
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGSTOP)
  withr::defer(tools::pskill(pid, tools::SIGCONT))
  wait_for_state(pid, "T")
  # The first request reaches the stopped helper's socket; the others wait
  # for it to accept or answer. All time out.
  expect_error(send_object("V1", "t", timeout = 1), class = "yaplr_timeout")
  expect_error(send_object(runif(1e5), "t", timeout = 1), class = "yaplr_timeout")
  expect_error(remove_object("kept", timeout = 1), class = "yaplr_timeout")
  expect_error(send_objects(list(t = "V2", u = 1), timeout = 1), class = "yaplr_timeout")
  tools::pskill(pid, tools::SIGCONT)
  wait_for_state(pid, "S")
  # Resumed, the helper finds them past their deadlines and makes none.
  expect_identical(retrieve_object("t"), "V0")
  expect_identical(retrieve_object("kept"), 1)
  expect_false(does_object_exist("u"))
  expect_identical(server_info()$pid, pid)
  # The file of the timed-out large send is not left behind.
  wait_until(function() nrow(object_headers(store_dir())) == 0L,
             what = "no object file to remain")
})

test_that("sends applied before a helper crash are never reported as failures", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  ctl <- withr::local_tempdir()
  n_writers <- 4L
  writer <- function(dir, w, ctl) {
    options(yaplr.dir = dir, yaplr.timeout = 10)
    tags <- sprintf("shared%d", 1:4)
    writeLines("ready", file.path(ctl, paste0("ready-", w)))
    deadline <- Sys.time() + 60
    while (!file.exists(file.path(ctl, "go")) && Sys.time() < deadline) Sys.sleep(0.005)
    errors <- character()
    i <- 0L
    while (!file.exists(file.path(ctl, "stop")) && Sys.time() < deadline) {
      i <- i + 1L
      # Small values travel inline, large ones in files.
      value <- if (i %% 2L == 0L) c(w, i) else c(w, i, numeric(2e4))
      res <- tryCatch({
        yaplr::send_object(value, tags[(i + w) %% 4L + 1L])
        NULL
      }, yaplr_error = function(e) paste(class(e)[1L], conditionMessage(e)))
      if (!is.null(res)) errors <- c(errors, res)
    }
    list(calls = i, errors = errors)
  }
  procs <- lapply(seq_len(n_writers), function(w) {
    callr::r_bg(writer, list(dir = dir, w = w, ctl = ctl))
  })
  withr::defer(for (p in procs) p$kill())
  wait_until(function() {
    all(file.exists(file.path(ctl, paste0("ready-", seq_len(n_writers)))))
  }, timeout = 30, what = "the writers to load yaplr")
  file.create(file.path(ctl, "go"))
  kills <- 0L
  t_run <- Sys.time()
  while (as.numeric(Sys.time() - t_run, units = "secs") < 6) {
    Sys.sleep(0.5)
    pid <- helper_pid_from_lock(dir)
    if (!is.na(pid)) {
      tools::pskill(pid, tools::SIGKILL)
      wait_until(function() !pid_alive(pid), what = "the helper to die")
      kills <- kills + 1L
    }
  }
  file.create(file.path(ctl, "stop"))
  for (p in procs) p$wait(30000)
  results <- lapply(procs, function(p) p$get_result())
  errors <- unlist(lapply(results, `[[`, "errors"))
  expect_gte(kills, 5L)
  for (r in results) expect_gt(r$calls, 20L)
  # A send that was applied, then superseded by another writer's while its
  # retry was in flight, has succeeded: no "missing object file" failure.
  expect(!any(grepl("missing", errors)),
         paste(c("false failures:", head(errors, 10)), collapse = "\n"))
  expect(!any(startsWith(errors, "yaplr_server")),
         paste(c("server errors:", head(errors, 10)), collapse = "\n"))
})

test_that("an over-long description is a classed error, not a panic", {
  local_store()
  err <- expect_error(send_object(1, "x", description = strrep("a", 2e7)),
                      class = "yaplr_bad_argument")
  expect_match(conditionMessage(err), "65536 bytes")
  expect_false(does_object_exist("x"))
  expect_error(send_objects(list(a = 1, b = 2), description = strrep("b", 1e5)),
               class = "yaplr_bad_argument")
  expect_false(does_object_exist("a"))
  send_object(1, "x", description = strrep("a", 65536))
  expect_identical(nchar(object_info("x")$description), 65536L)
})

test_that("large batches work: more than a frame of small objects, more than 253 files", {
  local_store()
  small <- lapply(1:400, function(i) c(i, runif(7490)))   # about 60 KB each
  names(small) <- sprintf("s%03d", 1:400)
  send_objects(small)
  expect_identical(retrieve_objects(names(small)), small)
  big <- lapply(1:300, function(i) rep(as.numeric(i), 9000L))   # 72 KB: a file each
  names(big) <- sprintf("b%03d", 1:300)
  send_objects(big)
  expect_identical(object_info("b300")$storage, "file")
  expect_identical(sum(list_objects()$size > 65536), 300L)
  got <- retrieve_objects(c(names(big), names(small)[1:50]), copy = TRUE)
  expect_identical(got, c(big, small[1:50]))
  expect_identical(retrieve_objects(names(big)), big)
})

test_that("a mapping refused for lack of address space says why and what to do", {
  skip_if(!nzchar(Sys.which("bash")), "needs bash")
  dir <- local_store()
  send_object(runif(6.25e7), "big")   # 500 MB
  script <- tempfile(fileext = ".R")
  withr::defer(unlink(script))
  writeLines(c(
    sprintf("options(yaplr.dir = %s)", deparse(dir)),
    "e <- tryCatch(yaplr::retrieve_object('big'), error = identity)",
    "cat(class(e)[1L], conditionMessage(e), sep = '\\n')"
  ), script)
  rscript <- file.path(R.home("bin"), "Rscript")
  out <- system2("bash", c("-c", shQuote(paste("ulimit -v 400000;", shQuote(rscript), shQuote(script)))),
                 stdout = TRUE, stderr = TRUE, env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  expect_identical(out[1L], "yaplr_io")
  expect_match(paste(out[-1L], collapse = " "), "out of address space.*ulimit -v.*vm.max_map_count")
  # The session that could map it still can.
  expect_length(retrieve_object("big"), 6.25e7)
})

test_that("a helper that died is noticed before a large object is written", {
  dir <- local_store()
  send_object(1, "x")
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the helper to die")
  # The session's connection is stale: the call must fail at once, before
  # serializing. (An object that R refuses to serialize would fail with
  # another error if it were serialized first.)
  deep <- list()
  for (i in 1:1e5) deep <- list(deep)
  expect_error(suppressMessages(send_object(deep, "big", automatic_server_start = FALSE)),
               class = "yaplr_no_server")
  expect_error(send_object(runif(1e7), "big", automatic_server_start = FALSE),
               class = "yaplr_no_server")
  expect_identical(nrow(object_headers(dir)), 0L)
})

test_that("small objects are kept once: the helper's memory stays small, the journal near their size", {
  dir <- local_store()
  x <- lapply(1:2000, function(i) as.raw(sample(0:255, 60000, TRUE)))
  for (i in seq_along(x)) send_object(x[[i]], paste0("t", i))
  for (i in 1:1000) send_object(x[[i + 1000]], paste0("t", i))   # overwrite half
  for (i in seq_along(x)) retrieve_object(paste0("t", i))
  stored <- sum(list_objects()$size)
  expect_gt(stored, 1.2e8)
  st <- readLines(sprintf("/proc/%d/status", server_info()$pid))
  # Its own memory: the pages of the store's files it maps are not copies.
  rss <- as.numeric(sub("RssAnon:\\s+([0-9]+) kB", "\\1", grep("^RssAnon", st, value = TRUE))) * 1024
  journal <- file.size(file.path(dir, "catalog.journal"))
  # The helper no longer holds a copy of every small object in memory.
  expect_lt(rss, 0.25 * stored)
  # The journal holds them once, plus at most a fifth of dead records.
  expect_lt(journal, 1.25 * stored + 2^20)
  expect_identical(retrieve_object("t1"), x[[1001]])
})
