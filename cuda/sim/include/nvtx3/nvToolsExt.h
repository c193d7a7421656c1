// NVTX ranges for the sim build: no tool listens, so they cost nothing and record nothing.
#pragma once

inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }
