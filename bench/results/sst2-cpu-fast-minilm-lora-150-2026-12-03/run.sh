#!/bin/bash
# The three SST-2 runs at 150 steps (the step count of sst2-cpu-minilm-2026-11-24 and
# sst2-cpu-fast-minilm-2026-12-03), one after another, on the fast CPU backend (the default).
cd "$(dirname "$0")"  # the run directory: build/bin/engine copied in as ./engine, and train_8000.tsv
M=$M
DEV=../shared/data/sst2/dev.tsv
STEPS=150
COMMON="--model $M --train train_8000.tsv --dev $DEV --max-steps $STEPS --eval-steps $STEPS --logging-steps 10 --warmup-ratio 0.1 --batch-size 32 --seed 42"
run() {
  name=$1; shift
  rm -rf $name; mkdir -p logs
  echo "$ engine finetune $COMMON --output-dir $name $*" > logs/$name.finetune.txt
  { time ./engine finetune $COMMON --output-dir $name "$@" ; } >> logs/$name.finetune.txt 2>&1
}
run lora-r8-qv --learning-rate 1e-3 --peft lora --lora-r 8 --lora-alpha 16 --lora-target-modules query,value
run lora-r16-all --learning-rate 1e-3 --peft lora --lora-r 16 --lora-alpha 32 --lora-target-modules query,key,value,attention.output.dense,intermediate.dense,output.dense
run full --learning-rate 1e-4
echo done > logs/ALL_DONE
