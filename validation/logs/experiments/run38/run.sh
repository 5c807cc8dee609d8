# runs 38 (H100) and 39 (H200): with h100-stream-k-knobs-runs33-37.patch applied to kernels/
cd benchmarks
NW="--variant NW2:_REDUCE_NUM_WARPS=2 --variant NW1PDL:_REDUCE_NUM_WARPS=1,_STREAM_K_PDL=True --variant NW2PDL:_REDUCE_NUM_WARPS=2,_STREAM_K_PDL=True"
timeout 280 python kernels.py --sections streamk_rounds --shapes 1:1024,2:1024,4:1024,8:1024,1:4096,4:4096,2:16384 --variant A1:_STREAM_K_ASSUME_UNIFORM=1 $NW --out $OUT/uniform > $OUT/uniform.log 2>&1
timeout 200 python kernels.py --sections streamk_rounds --shapes 2:16384:r,8:4096:r,4:65536:r $NW --out $OUT/ragged > $OUT/ragged.log 2>&1
for f in uniform ragged; do grep -E "^ +[0-9]+ +[0-9]+ |variant|faster" $OUT/$f.log | sed 's/   \[/\n   [/g'; done
