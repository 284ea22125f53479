test_that("save_objects() and load_objects() move objects between stores", {
  local_store()
  send_object(mtcars, "cars", description = "the mtcars data")
  send_object(runif(1e5), "big", namespace = "other")
  send_object(letters, "small", namespace = "other")
  info <- object_info("cars")
  f <- tempfile(fileext = ".ydump")
  withr::defer(unlink(f))
  expect_identical(save_objects(f), 3)
  expect_identical(save_objects(f, namespace = "other"), 2)
  expect_identical(save_objects(f, tags = "cars"), 1)
  expect_error(save_objects(f, tags = "nope"), class = "yaplr_not_found")
  expect_identical(save_objects(f), 3)

  other <- tempfile("yaplr-dump-", tmpdir = if (dir.exists("/dev/shm")) "/dev/shm" else tempdir())
  withr::defer(remove_store(other))
  withr::with_options(list(yaplr.dir = other), {
    loaded <- load_objects(f)
    expect_identical(nrow(loaded), 3L)
    expect_identical(retrieve_object("cars"), mtcars)
    expect_length(retrieve_object("big", namespace = "other"), 1e5)
    expect_identical(retrieve_object("small", namespace = "other"), letters)
    got <- object_info("cars")
    expect_identical(got$description, "the mtcars data")
    expect_identical(got$ctime, info$ctime)
    # Refuses to overwrite unless asked, loading nothing.
    send_object("changed", "cars")
    expect_error(load_objects(f), class = "yaplr_bad_argument")
    expect_identical(retrieve_object("cars"), "changed")
    load_objects(f, overwrite = TRUE)
    expect_identical(retrieve_object("cars"), mtcars)
  })
  # A damaged or truncated dump is refused before anything is loaded.
  bytes <- readBin(f, "raw", file.size(f))
  writeBin(bytes[seq_len(length(bytes) - 50)], f)
  third <- tempfile("yaplr-dump3-", tmpdir = if (dir.exists("/dev/shm")) "/dev/shm" else tempdir())
  withr::defer(remove_store(third))
  withr::with_options(list(yaplr.dir = third), {
    expect_error(load_objects(f), class = "yaplr_corrupt")
    expect_identical(nrow(list_objects(namespace = NULL)), 0L)
  })
  expect_error(load_objects(tempfile()), class = "yaplr_bad_argument")
  expect_error(save_objects(NA), class = "yaplr_bad_argument")
})

test_that("a flipped bit anywhere in a dump loads nothing", {
  dir <- local_store()
  send_object(mtcars, "cars", description = "the mtcars data")
  send_object(runif(2e4), "big")
  send_object(letters, "small", namespace = "other")
  f <- withr::local_tempfile(fileext = ".ydump")
  save_objects(f)
  good <- readBin(f, "raw", file.size(f))
  quit_server()
  set.seed(8)
  # The header, entries, small and large payloads, checksums, the end.
  offsets <- unique(c(9L, 20L, 30L, 200L, 2000L, sample(length(good), 20L), length(good) - 3L))
  for (at in offsets) {
    bad <- good
    bad[at] <- xor(bad[at], as.raw(0x10))
    writeBin(bad, f)
    expect_error(load_objects(f), class = "yaplr_corrupt", info = at)
    expect_identical(nrow(list_objects(namespace = NULL)), 0L, info = at)
  }
  expect_identical(nrow(object_headers(dir)), 0L)
  writeBin(good, f)
  expect_identical(nrow(load_objects(f)), 3L)
  expect_identical(retrieve_object("cars"), mtcars)
})

test_that("save_objects() refuses to dump a damaged object", {
  dir <- local_store()
  send_object(runif(2e4), "big")
  h <- object_headers(dir)
  con <- file(h$file[1L], "r+b")
  seek(con, 2048 + 64 + 100, rw = "write")
  writeBin(as.raw(rep(0xff, 8)), con)
  close(con)
  f <- tempfile(fileext = ".ydump")
  err <- expect_error(save_objects(f), class = "yaplr_corrupt")
  expect_match(conditionMessage(err), "\"big\"")
  expect_false(file.exists(f))
})

test_that("loading is all or none, even when the loading process is killed", {
  dir <- local_store()
  f <- withr::local_tempfile(fileext = ".ydump")
  # Five objects of 40 MB, then small ones.
  for (i in 1:5) send_object(rep(as.numeric(i), 5e6), paste0("big", i))
  send_object("small", "small")
  save_objects(f)
  quit_server()
  send_object("here before", "other")
  p <- callr::r_bg(function(dir, f) {
    options(yaplr.dir = dir, yaplr.timeout = 60)
    yaplr::load_objects(f)
  }, list(dir = dir, f = f))
  withr::defer(p$kill())
  pid <- p$get_pid()
  # Kill it once it has staged an object or two (files named, unpublished).
  wait_until(function() nrow(object_headers(dir)) >= 2L || !p$is_alive(),
             timeout = 60, what = "the loader to stage objects")
  expect_true(p$is_alive())
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the loader to die")
  expect_identical(rownames(list_objects()), "other")
  # Its staged files go once it is gone; a rerun needs no overwrite.
  wait_until(function() nrow(object_headers(dir)) == 0L, timeout = 20,
             what = "the staged files to be removed")
  loaded <- load_objects(f)
  expect_identical(nrow(loaded), 6L)
  expect_identical(retrieve_object("big3")[1:2], c(3, 3))
  expect_identical(retrieve_object("small"), "small")
})
