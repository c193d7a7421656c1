#!/bin/bash
# The three SST-2 runs, one after another (the 2-core machine is shared: running them together would skew step times).
cd "$(dirname "$0")"  # the run directory: build/bin/engine copied in as ./engine, and train_8000.tsv
M=$M
DEV=../shared/data/sst2/dev.tsv
STEPS=80
COMMON="--model $M --train train_8000.tsv --dev $DEV --max-steps $STEPS --eval-steps $STEPS --logging-steps 10 --warmup-ratio 0.1 --batch-size 32 --seed 42"
run() {
  name=$1; shift
  rm -rf $name; mkdir -p logs
  echo "$ engine finetune $COMMON --output-dir $name $*" > logs/$name.finetune.txt
  { time ./engine finetune $COMMON --output-dir $name "$@" ; } >> logs/$name.finetune.txt 2>&1
}
run lora-r8-qv --learning-rate 1e-3 --peft lora --lora-r 8 --lora-alpha 16 --lora-target-modules query,value
./engine eval --model $M --adapter lora-r8-qv/model --data $DEV --quiet > logs/lora-r8-qv.eval_dev.json 2>&1
python3 tools/check_peft_load.py $M lora-r8-qv/model ./engine > logs/lora-r8-qv.check_peft_load.txt 2>&1
run lora-r16-all --learning-rate 1e-3 --peft lora --lora-r 16 --lora-alpha 32 --lora-target-modules query,key,value,attention.output.dense,intermediate.dense,output.dense
./engine eval --model $M --adapter lora-r16-all/model --data $DEV --quiet > logs/lora-r16-all.eval_dev.json 2>&1
python3 tools/check_peft_load.py $M lora-r16-all/model ./engine > logs/lora-r16-all.check_peft_load.txt 2>&1
./engine merge --model $M --adapter lora-r16-all/model --output-dir lora-r16-all-merged > logs/lora-r16-all.merge.txt 2>&1
./engine eval --model lora-r16-all-merged --data $DEV --quiet > logs/lora-r16-all-merged.eval_dev.json 2>&1
run full --learning-rate 1e-4
echo done > logs/ALL_DONE
