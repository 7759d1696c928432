#!/bin/sh
#$ -N mirai
#$ -V
#$ -t 1-4
#$ -l h_rt=01:00:00
exec mirai-daemon tcp://10.0.0.1:5555 --idletime 60000
