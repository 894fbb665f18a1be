/* Subcommands of the `moe` tool. Each takes its own argv (argv[0] is the subcommand's
 * name), prints its own --help, and returns the process exit status: 0 success, 1 failure,
 * 2 usage error. */
#pragma once

int moe_cmd_inspect(int argc, char **argv);
int moe_cmd_mkmodel(int argc, char **argv);
int moe_cmd_run(int argc, char **argv);
int moe_cmd_tokenize(int argc, char **argv);
int moe_cmd_detokenize(int argc, char **argv);
int moe_cmd_bench(int argc, char **argv);

/* `moe bench` subcommands; each takes --json and then prints one JSON object whose
 * headline ratio is in the field "ratio". */
int moe_bench_kernels(int argc, char **argv);
int moe_bench_io(int argc, char **argv);
int moe_bench_cache(int argc, char **argv);
int moe_bench_tokenize(int argc, char **argv);
