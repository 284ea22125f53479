test_that("bad tags give yaplr_bad_tag naming the problem", {
  local_store()
  bad <- list(NA_character_, "", c("a", "b"), character(), 1, NULL, TRUE, list("a"),
              strrep("x", 1025))
  for (tag in bad) {
    expect_error(send_object(1, tag), class = "yaplr_bad_tag")
    expect_error(retrieve_object(tag), class = "yaplr_bad_tag")
    expect_error(remove_object(tag), class = "yaplr_bad_tag")
    expect_error(does_object_exist(tag), class = "yaplr_bad_tag")
  }
  expect_error(send_object(1), class = "yaplr_bad_tag")
  expect_snapshot(error = TRUE, {
    send_object(1, c("a", "b"))
    retrieve_object(NA_character_)
    send_object(1, strrep("\u00e9", 600))
  })
  # Nothing was stored and no helper was needed.
  expect_false(is_server_running())
})

test_that("missing objects give yaplr_not_found naming the tag", {
  local_store()
  err <- expect_error(retrieve_object("nothing here"), class = "yaplr_not_found")
  expect_match(conditionMessage(err), "nothing here", fixed = TRUE)
  expect_identical(err$tag, "nothing here")
  expect_error(remove_object("nothing here"), class = "yaplr_not_found")
  expect_s3_class(err, "yaplr_error")
})

test_that("bad timeouts and flags give yaplr_bad_argument", {
  local_store()
  for (t in list(0, -1, NA, NA_real_, Inf, "1", c(1, 2), NULL)) {
    if (!is.null(t)) {
      expect_error(send_object(1, "x", timeout = t), class = "yaplr_bad_argument")
    }
    expect_error(list_objects(timeout = t), class = "yaplr_bad_argument")
  }
  # For the functions of one tag, NULL means the option.
  expect_identical(send_object(1, "x", timeout = NULL, namespace = NULL), 1)
  expect_identical(retrieve_object("x", timeout = NULL, namespace = NULL), 1)
  expect_error(send_object(1, "x", automatic_server_start = NA), class = "yaplr_bad_argument")
  expect_error(ping_server(quiet = "no"), class = "yaplr_bad_argument")
  withr::local_options(yaplr.timeout = -5)
  expect_error(retrieve_object("x"), class = "yaplr_bad_argument")
})

test_that("unusable store directories give yaplr_store", {
  local_store()
  file <- tempfile()
  writeLines("x", file)
  withr::defer(unlink(file))
  withr::with_options(list(yaplr.dir = file), {
    expect_error(send_object(1, "x"), class = "yaplr_store")
  })
  withr::with_options(list(yaplr.dir = file.path(file, "sub")), {
    expect_error(send_object(1, "x"), class = "yaplr_store")
  })
  withr::with_options(list(yaplr.dir = c("a", "b")), {
    expect_error(send_object(1, "x"), class = "yaplr_bad_argument")
  })
  long <- file.path(tempdir(), strrep("d", 120))
  withr::defer(unlink(long, recursive = TRUE))
  withr::with_options(list(yaplr.dir = long), {
    expect_error(send_object(1, "x"), "too long", class = "yaplr_store")
  })
})

test_that("a store directory owned by another user is refused", {
  skip_if_not(Sys.info()[["effective_user"]] == "root", "needs root to chown")
  dir <- local_store()
  dir.create(dir, mode = "0700")
  if (system2("chown", c("nobody", shQuote(dir))) != 0) skip("chown failed")
  err <- expect_error(send_object(1, "x"), class = "yaplr_store")
  expect_match(conditionMessage(err), "belongs to uid")
  expect_error(is_server_running(), class = "yaplr_store")
})

test_that("an object larger than the free space gives yaplr_no_space and keeps the store usable", {
  skip_if_not(Sys.info()[["effective_user"]] == "root", "needs root to mount a small tmpfs")
  mnt <- tempfile("yaplr-small-")
  dir.create(mnt)
  withr::defer(unlink(mnt, recursive = TRUE))
  if (system2("mount", c("-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt)) != 0) {
    skip("could not mount a tmpfs")
  }
  withr::defer(system2("umount", c("-l", mnt)))
  withr::local_options(yaplr.dir = file.path(mnt, "store"), yaplr.timeout = 20)
  withr::defer(quit_server())
  send_object("small", "a")
  err <- expect_error(send_object(runif(1e6), "big"), class = "yaplr_no_space")
  expect_match(conditionMessage(err), "big")
  expect_match(conditionMessage(err), "space")
  expect_false(does_object_exist("big"))
  expect_identical(retrieve_object("a"), "small")
  # The half-reserved file was removed: the space is back ("a" is small
  # and lives in the journal, "fits" has a file).
  send_object(runif(1e5), "fits")
  expect_true(does_object_exist("fits"))
  expect_length(grep("\\.yobj$", store_files(file.path(mnt, "store"))), 1L)
  # Fill the store; then even a small object (kept in the journal) gets a
  # clean yaplr_no_space and nothing stored before is lost.
  i <- 0
  repeat {
    i <- i + 1
    res <- tryCatch(send_object(runif(5e4), paste0("fill", i)), yaplr_no_space = function(e) e)
    if (inherits(res, "yaplr_no_space") || i > 200) break
  }
  expect_s3_class(res, "yaplr_no_space")
  small <- tryCatch(send_object(strrep("x", 3e4), "small"), yaplr_no_space = function(e) e)
  if (inherits(small, "yaplr_no_space")) {
    expect_match(conditionMessage(small), "small")
  }
  expect_identical(retrieve_object("a"), "small")
  for (j in seq_len(i - 1)) remove_object(paste0("fill", j))
  send_object(strrep("y", 3e4), "small")
  expect_identical(retrieve_object("small"), strrep("y", 3e4))
})
