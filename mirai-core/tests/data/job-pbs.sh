#!/bin/sh
#PBS -N mirai
#PBS -V
#PBS -J 1-4
#PBS -l walltime=01:00:00
exec mirai-daemon tcp://10.0.0.1:5555 --idletime 60000
