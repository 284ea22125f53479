# Queues: order, leases, a killed consumer's item handed back once, many
# consumers each item once.

test_that("a queue hands items out in order, once", {
  local_store()
  expect_equal(as.numeric(queue_length("q")), 0)
  queue_push("q", 1L)
  queue_push("q", list(a = "two"))
  queue_push("q", runif(1e5))
  expect_equal(as.numeric(queue_length("q")), 3)
  expect_identical(queue_pop("q"), 1L)
  expect_identical(queue_pop("q"), list(a = "two"))
  expect_length(queue_pop("q"), 1e5)
  expect_error(queue_pop("q", timeout = 0.2), "queue \"q\"", class = "yaplr_timeout")
  # Queues are not objects.
  expect_equal(nrow(list_objects()), 0L)
  expect_false(does_object_exist("q"))
})

test_that("a leased item stays until acknowledged", {
  local_store()
  queue_push("q", "job")
  item <- queue_pop("q", ack = FALSE)
  expect_s3_class(item, "yaplr_queue_item")
  expect_identical(item$value, "job")
  expect_output(print(item), "not yet acknowledged")
  n <- queue_length("q")
  expect_equal(as.numeric(n), 0)
  expect_equal(attr(n, "leased"), 1)
  queue_ack(item)
  expect_equal(attr(queue_length("q"), "leased"), 0)
  expect_error(queue_ack(item), "not leased", class = "yaplr_bad_argument")
  expect_error(queue_ack("job"), class = "yaplr_bad_argument")
})

test_that("the item of a killed consumer goes to another consumer, once", {
  dir <- local_store()
  queue_push("work", "precious")
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    item <- yaplr::queue_pop("work", ack = FALSE, timeout = 30)
    cat("popped\n")
    Sys.sleep(600)
  }, list(dir = dir), stdout = "|")
  withr::defer(p$kill())
  wait_until(function() grepl("popped", p$read_output()), what = "the consumer to pop")
  expect_equal(attr(queue_length("work"), "leased"), 1)
  p$kill()
  # Another consumer waiting on the queue gets it as soon as the helper
  # sees the death.
  t0 <- Sys.time()
  item <- queue_pop("work", ack = FALSE, timeout = 20)
  expect_identical(item$value, "precious")
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 10)
  queue_ack(item)
  expect_error(queue_pop("work", timeout = 0.3), class = "yaplr_timeout")
  n <- queue_length("work")
  expect_equal(c(as.numeric(n), attr(n, "leased")), c(0, 0))
})

test_that("three consumers draining 3000 items get each exactly once", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  consumers <- lapply(1:3, function(i) {
    callr::r_bg(function(dir) {
      options(yaplr.dir = dir)
      got <- integer()
      repeat {
        item <- yaplr::queue_pop("q", ack = FALSE, timeout = 60)
        yaplr::queue_ack(item)
        if (identical(item$value, -1L)) break
        got <- c(got, item$value)
      }
      got
    }, list(dir = dir))
  })
  withr::defer(for (p in consumers) p$kill())
  for (i in 1:3000) queue_push("q", i)
  for (i in 1:3) queue_push("q", -1L)
  for (p in consumers) p$wait(120000)
  got <- unlist(lapply(consumers, function(p) p$get_result()))
  expect_equal(sort(got), 1:3000)
  expect_equal(as.numeric(queue_length("q")), 0)
})

test_that("queue items survive a helper restart; remove_objects clears them", {
  dir <- local_store()
  queue_push("q", "a")
  queue_push("q", "b")
  tools::pskill(server_info()$pid, tools::SIGKILL)
  expect_identical(queue_pop("q"), "a")
  remove_objects()
  expect_equal(as.numeric(queue_length("q")), 0)
})

test_that("queue arguments are checked", {
  local_store()
  expect_error(queue_push(), class = "yaplr_bad_tag")
  expect_error(queue_push("q"), "`obj` is missing", class = "yaplr_bad_argument")
  expect_error(queue_push(NA_character_, 1), class = "yaplr_bad_tag")
  expect_error(queue_pop("q", ack = NA), class = "yaplr_bad_argument")
  expect_error(queue_pop("q", timeout = "1"), class = "yaplr_bad_argument")
  expect_error(queue_length(character()), class = "yaplr_bad_tag")
})
