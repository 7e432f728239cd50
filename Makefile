# Petrel: `make test` runs every test (what CI runs); see README.md.
.PHONY: test microbench
test:
	bash tools/test.sh

microbench:
	cd Benchmarks && swift run -c release petrel-microbench
