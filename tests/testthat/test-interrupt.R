# Ctrl-C during long transfers. Each case runs in an R process started as a
# script (callr), which receives SIGINT while it is inside the transfer
# (inside the Rust call), as a user pressing Ctrl-C under Rscript would.

# Bytes the process has written, read and holds in memory: it grows while
# a transfer runs, whichever way it moves the bytes (pwrite, pread, copy
# from a mapping).
activity <- function(pid) {
  io <- tryCatch(readLines(sprintf("/proc/%d/io", pid), warn = FALSE),
                 error = function(e) character())
  st <- tryCatch(readLines(sprintf("/proc/%d/status", pid), warn = FALSE),
                 error = function(e) character())
  num <- function(lines, key) {
    l <- lines[startsWith(lines, key)]
    if (length(l)) as.numeric(sub("^[^0-9]*([0-9]+).*$", "\\1", l[1L])) else 0
  }
  num(io, "rchar:") + num(io, "wchar:") + 1024 * num(st, "VmRSS:")
}

# Runs setup() then, inside tryCatch(interrupt = ), transfer(value of
# setup) in a new R process; sends it SIGINT once the transfer has moved
# 32 MB. Returns what the process saw: the classes of the condition its
# handler got (NULL if none ran) and anything transfer's caller records.
interrupt_transfer <- function(dir, setup, transfer) {
  marks <- withr::local_tempdir("yaplr-int-")
  p <- callr::r_bg(function(dir, marks, setup, transfer) {
    options(yaplr.dir = dir, yaplr.timeout = 60)
    env <- setup()
    invisible(gc())
    writeLines("ready", file.path(marks, "ready"))
    handled <- NULL
    res <- tryCatch(
      {
        transfer(env)
        "finished"
      },
      interrupt = function(e) {
        handled <<- class(e)
        "interrupted"
      }
    )
    list(result = res, class = handled)
  }, list(dir = dir, marks = marks, setup = setup, transfer = transfer))
  withr::defer(if (p$is_alive()) p$kill())
  pid <- p$get_pid()
  wait_until(function() file.exists(file.path(marks, "ready")) || !p$is_alive(),
             timeout = 120, what = "the process to prepare")
  expect_true(p$is_alive())
  start <- activity(pid)
  expect_gt(start, 0)
  wait_until(function() activity(pid) - start > 32e6 || !p$is_alive(),
             timeout = 120, what = "the transfer to start")
  tools::pskill(pid, tools::SIGINT)
  p$wait(60000)
  expect_false(p$is_alive())
  p$get_result()
}

yobj_files <- function(dir) {
  list.files(dir, pattern = "\\.yobj$")
}

test_that("Ctrl-C stops sending a large vector: the handler runs, nothing is stored", {
  skip_on_cran()
  dir <- local_store()
  send_object("old", "big")
  got <- interrupt_transfer(dir, function() runif(1e8),
                            function(x) yaplr::send_object(x, "big"))
  expect_identical(got$result, "interrupted")
  expect_true(all(c("yaplr_interrupted", "interrupt", "condition") %in% got$class))
  # Like R's own interrupt, it is no error: try() does not swallow it.
  expect_false("error" %in% got$class)
  expect_identical(retrieve_object("big"), "old")
  expect_identical(yobj_files(dir), character())
})

test_that("Ctrl-C stops serializing a large object: the handler runs, nothing is stored", {
  skip_on_cran()
  dir <- local_store()
  send_object("old", "big")
  got <- interrupt_transfer(dir, function() list(a = runif(1e8)),
                            function(x) yaplr::send_object(x, "big"))
  expect_identical(got$result, "interrupted")
  expect_true("yaplr_interrupted" %in% got$class)
  expect_identical(retrieve_object("big"), "old")
  expect_identical(yobj_files(dir), character())
})

test_that("Ctrl-C stops copying a large vector out of the store", {
  skip_on_cran()
  dir <- local_store()
  got <- interrupt_transfer(dir, function() {
    yaplr::send_object(runif(1e8), "big")
    NULL
  }, function(x) {
    y <- yaplr::retrieve_object("big", copy = TRUE)
  })
  expect_identical(got$result, "interrupted")
  expect_true("yaplr_interrupted" %in% got$class)
  expect_identical(object_info("big")$length, 1e8)
  expect_length(yobj_files(dir), 1L)
})

test_that("Ctrl-C stops reading a large serialized object", {
  skip_on_cran()
  dir <- local_store()
  got <- interrupt_transfer(dir, function() {
    yaplr::send_object(list(a = runif(1e8)), "big")
    NULL
  }, function(x) {
    y <- yaplr::retrieve_object("big")
  })
  expect_identical(got$result, "interrupted")
  expect_true("yaplr_interrupted" %in% got$class)
  expect_true(does_object_exist("big"))
  expect_length(yobj_files(dir), 1L)
})

test_that("Ctrl-C stops loading a large dump: nothing is loaded", {
  skip_on_cran()
  dir <- local_store()
  f <- withr::local_tempfile(fileext = ".ydump")
  for (i in 1:4) send_object(runif(2.5e7), paste0("big", i))   # 4 x 200 MB
  save_objects(f)
  quit_server()
  send_object("here before", "other")
  got <- interrupt_transfer(dir, function() NULL,
                            function(x) yaplr::load_objects(f))
  expect_identical(got$result, "interrupted")
  expect_true("yaplr_interrupted" %in% got$class)
  expect_identical(rownames(list_objects()), "other")
  wait_until(function() length(yobj_files(dir)) == 0L, timeout = 20,
             what = "no staged object file to remain")
})

test_that("Ctrl-C stops saving a large dump: no dump file is written", {
  skip_on_cran()
  dir <- local_store()
  for (i in 1:4) send_object(runif(2.5e7), paste0("big", i))
  out <- withr::local_tempdir()
  f <- file.path(out, "store.ydump")
  got <- interrupt_transfer(dir, function() NULL,
                            function(x) yaplr::save_objects(f))
  expect_identical(got$result, "interrupted")
  expect_true("yaplr_interrupted" %in% got$class)
  expect_identical(list.files(out), character())
  expect_length(yobj_files(dir), 4L)
})
