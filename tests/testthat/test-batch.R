test_that("send_objects() stores all or none; retrieve_objects() reads one moment", {
  local_store()
  send_objects(list(a = 1, b = "x", big = runif(1e5)), description = "batch")
  got <- retrieve_objects(c("b", "a", "big"))
  expect_identical(names(got), c("b", "a", "big"))
  expect_identical(got$a, 1)
  expect_identical(got$b, "x")
  expect_length(got$big, 1e5)
  expect_identical(object_info("a")$description, "batch")
  # All or none: an object that can not be serialized stops the whole batch.
  deep <- list()
  for (i in 1:1e5) deep <- list(deep)
  before <- list_objects()
  res <- tryCatch(
    suppressMessages(send_objects(list(a = 2, b = "y", c = deep))),
    error = function(e) e
  )
  if (inherits(res, "error")) {
    expect_s3_class(res, "yaplr_error")
    expect_identical(retrieve_objects(c("a", "b")), list(a = 1, b = "x"))
    expect_false(does_object_exist("c"))
  }
  # A capacity that one object of the batch would exceed: none is stored.
  resize_store(server_info()$used + 500)
  expect_error(send_objects(list(a = 3, huge = runif(1e5))), class = "yaplr_no_space")
  expect_identical(retrieve_object("a"), 1)
  expect_false(does_object_exist("huge"))
  resize_store(NULL)
  err <- expect_error(retrieve_objects(c("a", "nope")), class = "yaplr_not_found")
  expect_match(conditionMessage(err), "nope")
  expect_identical(retrieve_objects(character()), setNames(list(), character()))
  send_objects(list())
  expect_error(send_objects(list(1, 2)), class = "yaplr_bad_tag")
  expect_error(send_objects(list(a = 1, a = 2)), class = "yaplr_bad_tag")
  expect_error(send_objects(1:3), class = "yaplr_bad_argument")
  expect_error(retrieve_objects(c("a", NA)), class = "yaplr_bad_tag")
})

test_that("a reader never sees a batch half applied", {
  local_store()
  send_objects(list(x = 0L, y = 0L))
  writer <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    for (i in 1:300) yaplr::send_objects(list(x = i, y = i))
    TRUE
  }, list(dir = getOption("yaplr.dir")))
  withr::defer(writer$kill())
  mixed <- 0
  reads <- 0
  deadline <- Sys.time() + 60
  while (writer$is_alive() && Sys.time() < deadline) {
    v <- retrieve_objects(c("x", "y"))
    reads <- reads + 1
    if (!identical(v$x, v$y)) mixed <- mixed + 1
  }
  writer$wait(10000)
  expect_true(writer$get_result())
  expect_gt(reads, 0)
  expect_identical(mixed, 0)
  expect_identical(retrieve_objects(c("x", "y")), list(x = 300L, y = 300L))
})

test_that("retrieve_objects() refuses a tag given twice, with a classed error", {
  local_store()
  send_object(1, "a")
  err <- expect_error(retrieve_objects(c("a", "a")), class = "yaplr_bad_argument")
  expect_match(conditionMessage(err), "\"a\" is asked for twice")
})
