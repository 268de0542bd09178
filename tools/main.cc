// hxforge: one binary, subcommands like git (cli.md is the contract).
#include <cstdio>
int main() { std::puts("hxforge"); return 0; }
