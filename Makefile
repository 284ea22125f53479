# Development tasks for yaplr. `make demo` and `make check` work on a fresh
# machine: both install R and the R packages from Debian when missing.

PKG     := yaplr
VERSION := $(shell sed -n 's/^Version: //p' DESCRIPTION)
TARBALL := $(PKG)_$(VERSION).tar.gz
RUST    := src/rust
# One cargo target directory for every build of the package (install,
# R CMD build, R CMD check), so Rust is compiled once.
export YAPLR_CARGO_TARGET_DIR ?= $(CURDIR)/$(RUST)/target
export PATH := $(PATH):$(HOME)/.cargo/bin
export NOT_CRAN := true

.PHONY: all deps install demo check rcheck cargo-test lint test document wrappers clean bench soak

all: install

deps:
	bash tools/install-deps.sh

install: deps
	R CMD INSTALL --no-multiarch .

demo: install
	bash tools/demo.sh

# Regenerate R/extendr-wrappers.R from the Rust module, then the docs.
wrappers: deps
	rm -rf .wrappers-lib && mkdir -p .wrappers-lib
	R CMD INSTALL --no-test-load -l .wrappers-lib .
	Rscript tools/update-wrappers.R .wrappers-lib
	rm -rf .wrappers-lib
	$(MAKE) document

document:
	Rscript -e 'roxygen2::roxygenise(load_code = "source")'

$(TARBALL): deps
	R CMD build .

rcheck: $(TARBALL)
	_R_CHECK_FORCE_SUGGESTS_=true R CMD check --no-manual $(TARBALL)
	@if grep -q "Status:.*\(ERROR\|WARNING\)" $(PKG).Rcheck/00check.log; then \
	  echo "R CMD check reported an ERROR or WARNING"; exit 1; fi

# The integration tests reach into the crate's internal modules: they need
# the `internals` feature (normal builds keep those modules private).
cargo-test:
	cd $(RUST) && cargo test --workspace --exclude yaplr-r --features yaplr-core/internals

lint:
	cd $(RUST) && cargo fmt --all -- --check
	cd $(RUST) && cargo clippy --workspace --all-targets -- -D warnings
	cd $(RUST) && cargo clippy --workspace --all-targets --features yaplr-core/internals -- -D warnings

check: rcheck cargo-test lint
	@echo "make check: all passed"

# testthat against the installed package, without R CMD check.
test: install
	Rscript -e 'testthat::test_local(".", load_package = "installed")'

# Benchmark: writes bench/results.md and bench/results.png.
bench: install
	Rscript bench/bench.R
	Rscript bench/coordination.R
	Rscript bench/fastpath.R

# The long soak (4 sessions, 120 s, the helper killed every 5 s) against
# the installed package.
soak: install
	Rscript tools/soak.R 120 5

clean:
	rm -rf $(PKG).Rcheck $(PKG)_*.tar.gz src/*.o src/*.so src/yaplrd $(RUST)/target
