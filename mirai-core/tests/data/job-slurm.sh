#!/bin/sh
#SBATCH --job-name=mirai
#SBATCH --array=1-4
#SBATCH --partition=debug
#SBATCH --mem=1G
exec mirai-daemon tcp://10.0.0.1:5555 --idletime 60000
