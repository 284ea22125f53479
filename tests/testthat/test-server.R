test_that("the helper starts lazily, quits, and starts again", {
  dir <- local_store()
  expect_false(is_server_running())
  expect_false(ping_server(quiet = TRUE))
  expect_warning(ping_server(), "No yaplr helper")
  send_object(1, "x")
  expect_true(is_server_running())
  info <- server_info()
  expect_s3_class(info, "yaplr_server_info")
  expect_true(pid_alive(info$pid))
  expect_identical(normalizePath(info$dir), normalizePath(dir))
  expect_identical(info$objects, 1)
  expect_output(print(info), "yaplr helper")
  expect_true(ping_server())
  expect_false(make_sure_server_is_started(quiet = TRUE))

  expect_true(quit_server())
  expect_false(pid_alive(info$pid))
  expect_false(is_server_running())
  expect_false(dir.exists(dir) && length(store_files(dir)) > 0L)
  expect_false(quit_server())
  expect_false(make_sure_server_is_down())

  expect_message(expect_true(make_sure_server_is_started()), "Started the yaplr helper")
  expect_false(does_object_exist("x"))
  pid2 <- server_info()$pid
  expect_true(make_sure_server_is_down())
  expect_false(pid_alive(pid2))
})

test_that("the store directory and its files are private", {
  dir <- local_store()
  send_object(1, "x")
  expect_identical(as.character(file.info(dir)$mode), "700")
  modes <- as.character(file.info(file.path(dir, store_files(dir)))$mode)
  expect_true(all(modes %in% c("600")), info = paste(modes, collapse = " "))
})

test_that("a helper killed with SIGKILL is replaced and loses nothing", {
  local_store()
  send_object(mtcars, "cars")
  send_object(1:3, "small")
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the helper to die")
  # A new session reads what was stored without a helper (the store's
  # index), and its first change starts a new helper at once.
  got <- in_session(function() {
    cars <- yaplr::retrieve_object("cars")
    yaplr::send_object("from the new session", "fresh")
    list(cars = cars, pid = yaplr::server_info()$pid)
  })
  expect_identical(got$cars, mtcars)
  expect_false(got$pid == pid)
  expect_identical(retrieve_object("fresh"), "from the new session")
  expect_identical(retrieve_object("small"), 1:3)
  send_object("after", "new")
  expect_identical(retrieve_object("new"), "after")
})

test_that("a stopped helper gives a timeout, not a hang", {
  local_store()
  send_object(1, "x")
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGSTOP)
  withr::defer(tools::pskill(pid, tools::SIGCONT))
  wait_for_state(pid, "T")
  # Reads need no helper: they find the object in the store's index.
  expect_identical(retrieve_object("x", timeout = 0.5), 1)
  expect_true(does_object_exist("x", timeout = 0.5))
  t0 <- Sys.time()
  err <- expect_error(send_object(2, "x", timeout = 0.5), class = "yaplr_timeout")
  expect_match(conditionMessage(err), "helper")
  expect_match(conditionMessage(err), "yaplr.timeout")
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 15)
  expect_error(remove_object("x", timeout = 0.3), class = "yaplr_timeout")
  expect_identical(rownames(list_objects(timeout = 0.3)), "x")
  tools::pskill(pid, tools::SIGCONT)
  expect_identical(retrieve_object("x"), 1)
})

test_that("without automatic start, calls say how to start the helper", {
  local_store()
  withr::local_options(yaplr.automatic_server_start = FALSE)
  err <- expect_error(send_object(1, "x"), class = "yaplr_no_server")
  expect_match(conditionMessage(err), "make_sure_server_is_started")
  expect_error(retrieve_object("x", automatic_server_start = FALSE), class = "yaplr_no_server")
  expect_false(is_server_running())
  send_object(1, "x", automatic_server_start = TRUE)
  expect_identical(retrieve_object("x"), 1)
})

test_that("stores in different directories never see each other", {
  local_store()
  send_object("in A", "x")
  other <- tempfile("yaplr-other-", tmpdir = if (dir.exists("/dev/shm")) "/dev/shm" else tempdir())
  withr::defer(remove_store(other))
  withr::with_options(list(yaplr.dir = other), {
    expect_false(does_object_exist("x"))
    send_object("in B", "x")
    expect_identical(retrieve_object("x"), "in B")
    quit_server()
  })
  expect_identical(retrieve_object("x"), "in A")
})

test_that("YAPLR_DIR selects the store when the option is unset", {
  withr::local_options(yaplr.dir = NULL)
  withr::local_envvar(YAPLR_DIR = "/tmp/some-yaplr-store")
  expect_identical(store_dir(), "/tmp/some-yaplr-store")
  withr::local_envvar(YAPLR_DIR = NA)
  expect_match(store_dir(), "yaplr-[0-9]+$")
})

test_that("quit_server(keep = TRUE) keeps objects for the next helper, on a disk too", {
  for (base in c("shm", "disk")) {
    dir <- if (base == "shm") local_store() else {
      d <- tempfile("yaplr-disk-", tmpdir = tempdir())
      withr::local_options(yaplr.dir = d)
      withr::defer(remove_store(d))
      d
    }
    send_object(mtcars, "cars")
    send_object(runif(1e5), "big", description = "kept")
    pid <- server_info()$pid
    expect_true(quit_server(keep = TRUE))
    expect_false(pid_alive(pid))
    expect_false(is_server_running())
    expect_true(any(grepl("\\.yobj$", store_files(dir))))
    # The next session starts a helper that serves them again.
    got <- in_session(function() {
      list(cars = yaplr::retrieve_object("cars"), info = yaplr::object_info("big"))
    })
    expect_identical(got$cars, mtcars)
    expect_identical(got$info$description, "kept")
    expect_true(quit_server())
    expect_false(dir.exists(dir) && length(store_files(dir)) > 0L)
  }
})

test_that("a capacity bounds the store, is reported, resized, and never evicts", {
  local_store()
  expect_true(make_sure_server_is_started(quiet = TRUE, capacity = "1 MB"))
  info <- server_info()
  expect_identical(info$capacity, 1e6)
  expect_identical(info$free, 1e6)
  send_object(runif(5e4), "a")            # 400 kB
  send_object(runif(5e4), "b")            # 800 kB in all
  err <- expect_error(send_object(runif(5e4), "c"), class = "yaplr_no_space")
  expect_match(conditionMessage(err), "capacity")
  expect_match(conditionMessage(err), "\"c\"")
  expect_match(conditionMessage(err), "resize_store")
  # Nothing was evicted and no file was left behind.
  expect_true(does_object_exist("a") && does_object_exist("b"))
  expect_false(does_object_exist("c"))
  # Overwriting a tag counts the value it replaces as freed.
  send_object(runif(5e4), "b")
  expect_error(resize_store("100 kB"), class = "yaplr_no_space")
  expect_identical(server_info()$capacity, 1e6)
  expect_identical(resize_store("2 MB")$capacity, 2e6)
  send_object(runif(5e4), "c")
  expect_lt(server_info()$free, 2e6 - 1.2e6 + 1)
  expect_true(is.na(resize_store(NULL)$capacity))
  expect_error(resize_store("lots"), class = "yaplr_bad_argument")
  expect_error(make_sure_server_is_started(capacity = -1), class = "yaplr_bad_argument")
  expect_output(print(server_info()), "capacity: unlimited")
})

test_that("options(yaplr.capacity) applies to a helper a call starts", {
  local_store()
  withr::local_options(yaplr.capacity = "300 KiB")
  send_object(1, "x")
  expect_identical(server_info()$capacity, 300 * 1024)
  expect_error(send_object(runif(5e4), "big"), class = "yaplr_no_space")
  # The capacity survives a restart of the helper.
  tools::pskill(server_info()$pid, tools::SIGKILL)
  withr::local_options(yaplr.capacity = NULL)
  expect_error(send_object(runif(5e4), "big"), class = "yaplr_no_space")
})

test_that("a helper started again gets the capacity option as it is now", {
  dir <- local_store()
  withr::local_options(yaplr.capacity = "300 kB")
  send_object(1, "small")
  expect_identical(server_info()$capacity, 3e5)
  # Another session stops the helper; this session's connection is stale.
  callr::r(function(dir) {
    options(yaplr.dir = dir)
    yaplr::quit_server()
  }, list(dir = dir))
  options(yaplr.capacity = NULL)
  send_object(runif(1e5), "big")            # 800 kB: over the old capacity
  expect_true(is.na(server_info()$capacity))
})

test_that("a capacity option that is no size fails only calls that may start a helper", {
  dir <- local_store()
  send_object(1, "x")
  got <- callr::r(function(dir) {
    options(yaplr.dir = dir, yaplr.capacity = "lots")
    started <- tryCatch(yaplr::send_object(2, "y", automatic_server_start = FALSE),
                        error = function(e) class(e)[1L])
    list(running = yaplr::is_server_running(), ping = yaplr::ping_server(quiet = TRUE),
         value = yaplr::retrieve_object("x", automatic_server_start = FALSE),
         started = started, quit = yaplr::quit_server(),
         restart = tryCatch(yaplr::send_object(3, "z"), error = function(e) class(e)[1L]))
  }, list(dir = dir))
  expect_true(got$running)
  expect_true(got$ping)
  expect_identical(got$value, 1)
  expect_type(got$started, "double")
  expect_true(got$quit)
  expect_identical(got$restart, "yaplr_bad_argument")
})
