V="T32:_STREAM_K_BLOCK_N=32 T32P2:_STREAM_K_BLOCK_N=32,_STREAM_K_SMALL_PROGRAMS_PER_SM=2 P2:_STREAM_K_SMALL_PROGRAMS_PER_SM=2 T32P2PDL:_STREAM_K_BLOCK_N=32,_STREAM_K_SMALL_PROGRAMS_PER_SM=2,_STREAM_K_PDL=True PDL:_STREAM_K_PDL=True"
VA=""; for v in $V; do VA="$VA --variant $v"; done
(cd validation/logs/experiments && timeout 200 python stream_k_knobs_check.py $V) > $OUT/check.log 2>&1; tail -2 $OUT/check.log
cd benchmarks && timeout 360 python kernels.py --sections streamk_rounds --main-only --shapes 1:1024,2:1024,4:1024,8:1024,1:4096,4:4096,2:16384,2:16384:r,8:4096:r $VA --out $OUT/r > $OUT/rounds.log 2>&1; grep -E "^ +[0-9]+ +[0-9]+ |variant|faster" $OUT/rounds.log | sed 's/   \[/\n   [/g' | tail -80
